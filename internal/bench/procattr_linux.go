//go:build linux

package bench

import "syscall"

// natsProcAttr makes the kernel kill the nats-server that Run started when
// the process that started it dies without stopping it (SIGKILL, a crash).
func natsProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
