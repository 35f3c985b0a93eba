//go:build !linux

package main

import (
	"os"
	"syscall"
	"time"
)

// Outside Linux there is no parent-death signal; children are stopped by
// the harness's own cleanup only.
func childSysProcAttr() *syscall.SysProcAttr { return nil }

func terminate(p *os.Process) { p.Signal(os.Interrupt) }

func kill(p *os.Process) { p.Kill() }

func selfCPU() (time.Duration, bool) { return 0, false }

// preciseSleep is only as precise as time.Sleep here; the open loop's send
// lag column shows what that costs.
func preciseSleep(d time.Duration) { time.Sleep(d) }
