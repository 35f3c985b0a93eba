package main

import (
	"os"
	"syscall"
	"time"
)

// childSysProcAttr puts each child in its own process group, so stopping it
// also stops anything it started, and has the kernel kill it if the harness
// dies without cleaning up (kill -9, a crash).
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func terminate(p *os.Process) { syscall.Kill(-p.Pid, syscall.SIGTERM) }

func kill(p *os.Process) { syscall.Kill(-p.Pid, syscall.SIGKILL) }

// selfCPU is the harness's own user+system CPU time: the load generator's
// cost, which shares the machine with the fake and the proxy.
func selfCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
