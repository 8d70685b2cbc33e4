//go:build linux

package main

import (
	"context"
	"fmt"
	"time"
)

func (s *soak) startFaults() {
	if s.c.killEvery > 0 {
		s.faultsWG.Add(1)
		go s.every(s.c.killEvery, func() {
			if err := s.srv.Kill(); err != nil {
				fmt.Println("soak: kill:", err)
				s.faultErrs.Add(1)
				return
			}
			select {
			case <-time.After(s.c.down):
			case <-s.faultsStop:
			}
			// Noted before the restart, so that no reconnect precedes it:
			// resume times include the server's start (a few ms).
			s.noteFault("kill")
			if err := s.srv.Restart(); err != nil {
				fmt.Println("soak: restart:", err)
				s.faultErrs.Add(1)
				return
			}
			s.kills.Add(1)
		})
	}
	if s.c.clientKillEvery > 0 {
		s.faultsWG.Add(1)
		go s.every(s.c.clientKillEvery, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			s.noteFault("client-kill")
			if _, err := s.admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Result(); err != nil {
				return // the server may be down at that moment
			}
			s.clientKill.Add(1)
		})
	}
}

func (s *soak) every(d time.Duration, fault func()) {
	defer s.faultsWG.Done()
	ticker := time.NewTicker(d)
	defer ticker.Stop()
	for {
		select {
		case <-s.faultsStop:
			return
		case <-ticker.C:
			fault()
		}
	}
}

func (s *soak) stopFaults() {
	close(s.faultsStop)
	s.faultsWG.Wait()
}

func (s *soak) noteFault(kind string) {
	s.faultMu.Lock()
	s.lastFault, s.faultKind = time.Now(), kind
	s.faultMu.Unlock()
}

// noteResume records how long after the last fault (noted just before it
// was made) a Subscriber reported its reconnect. A reconnect that follows a
// fault by more than 30s is not attributed.
func (s *soak) noteResume(at time.Time) {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	if s.lastFault.IsZero() {
		return
	}
	d := at.Sub(s.lastFault)
	if d < 0 || d > 30*time.Second {
		return
	}
	if s.faultKind == "kill" {
		s.resumeKill = append(s.resumeKill, d)
	} else {
		s.resumeCK = append(s.resumeCK, d)
	}
}
