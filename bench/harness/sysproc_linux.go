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

// preciseSleep sleeps in a nanosleep system call. time.Sleep can wake up to
// a millisecond late on Linux, because the runtime's poller waits in whole
// milliseconds; in the open loop that lateness would count as the target's
// latency. nanosleep is late by the kernel's timer slack, about 50µs.
func preciseSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	for {
		var left syscall.Timespec
		if err := syscall.Nanosleep(&ts, &left); err != syscall.EINTR {
			return
		}
		ts = left // the runtime's preemption signals interrupt the call
	}
}
