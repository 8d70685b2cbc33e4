//go:build !linux

package bench

import "syscall"

// natsProcAttr returns nil: only Linux can tie the nats-server's life to
// the process that started it.
func natsProcAttr() *syscall.SysProcAttr { return nil }
