package redisproc

import (
	"context"
	"fmt"
)

// CreateUser creates or replaces the ACL user name with password and the
// given ACL rules (ACL SETUSER name reset on >password rules...), for
// example
//
//	srv.CreateUser(ctx, "app", "secret", "&myapp:events:*", "+publish", "+subscribe", "+ping")
//
// The harness's own commands (Do) run as the default user, which stays
// unrestricted.
func (s *Server) CreateUser(ctx context.Context, name, password string, rules ...string) error {
	return s.SetUser(ctx, name, append([]string{"reset", "on", ">" + password}, rules...)...)
}

// SetUser applies ACL rules to the user name (ACL SETUSER name rules...),
// creating it if needed. When the new rules take a channel away from the
// user, Redis disconnects the user's clients subscribed to it.
func (s *Server) SetUser(ctx context.Context, name string, rules ...string) error {
	args := []any{"ACL", "SETUSER", name}
	for _, r := range rules {
		args = append(args, r)
	}
	if _, err := s.Do(ctx, args...); err != nil {
		return fmt.Errorf("redisproc: %s: ACL SETUSER %s: %w", s.Addr(), name, err)
	}
	return nil
}

// RevokeChannels takes every channel away from the user name (ACL SETUSER
// name resetchannels): Redis disconnects the user's clients that are
// subscribed to a channel or pattern, and refuses their next PUBLISH or
// SUBSCRIBE with a NOPERM error.
func (s *Server) RevokeChannels(ctx context.Context, name string) error {
	return s.SetUser(ctx, name, "resetchannels")
}

// DeleteUser deletes the user name (ACL DELUSER): Redis disconnects every
// client authenticated as it.
func (s *Server) DeleteUser(ctx context.Context, name string) error {
	if _, err := s.Do(ctx, "ACL", "DELUSER", name); err != nil {
		return fmt.Errorf("redisproc: %s: ACL DELUSER %s: %w", s.Addr(), name, err)
	}
	return nil
}
