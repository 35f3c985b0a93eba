package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// child is a process the harness started; it is stopped when the run ends.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed when the process has been waited for
	waitErr error
}

// procGroup owns every child so that one deferred stopAll ends them all,
// whichever way the run ends.
type procGroup struct {
	mu       sync.Mutex
	children []*child
	stopped  bool
	stopOnce sync.Once
}

// start runs bin with args, sending its stdout and stderr to logPath.
// onLine, if set, sees each stdout line (to learn a listening address).
func (g *procGroup) start(name, bin string, args []string, logPath string, onLine func(string)) (*child, error) {
	g.mu.Lock()
	stopped := g.stopped
	g.mu.Unlock()
	if stopped {
		return nil, fmt.Errorf("not starting %s: the run is stopping", name)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = childSysProcAttr()
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s (%s): %w", name, bin, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	g.mu.Lock()
	g.children = append(g.children, c)
	if g.stopped {
		// stopAll ran while this child was starting.
		terminate(cmd.Process)
	}
	g.mu.Unlock()
	go func() {
		// Copy stdout to the log, showing each line to onLine; the pipe
		// must be drained before Wait.
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if onLine != nil {
				onLine(sc.Text())
			}
			fmt.Fprintln(logf, sc.Text())
		}
		io.Copy(logf, stdout)
		c.waitErr = cmd.Wait()
		logf.Close()
		close(c.exited)
	}()
	return c, nil
}

// stopAll asks every child to stop (SIGTERM to its process group), waits up
// to 3 s and kills what is left. It runs once; concurrent callers (the
// cancel watcher and the deferred cleanup) all wait for it to finish.
func (g *procGroup) stopAll() { g.stopOnce.Do(g.stop) }

func (g *procGroup) stop() {
	g.mu.Lock()
	g.stopped = true
	children := g.children
	g.mu.Unlock()
	for _, c := range children {
		terminate(c.cmd.Process)
	}
	deadline := time.After(3 * time.Second)
	for _, c := range children {
		select {
		case <-c.exited:
		case <-deadline:
			kill(c.cmd.Process)
			<-c.exited
		}
	}
}

// logTail returns the end of a child's log, for error messages.
func (c *child) logTail() string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	const keep = 2000
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "(empty log)"
	}
	return s
}

// moduleRoot finds the repository root, where go build must run.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the auditproxy module: run the harness from the repository, or pass -fake-bin and -proxy-bin")
	}
	return filepath.Dir(mod), nil
}

// build compiles pkg (relative to the module root) into out.
func build(ctx context.Context, pkg, out string) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build -o %s %s: %w\n%s", out, pkg, err, bytes.TrimSpace(b))
	}
	return nil
}

// startFake runs the fake and returns its base URL, which it prints on
// stdout once listening (so that port 0 works).
func startFake(ctx context.Context, g *procGroup, bin, listen, dir string) (*child, string, error) {
	urlc := make(chan string, 1)
	c, err := g.start("fakevllm", bin, []string{
		"-listen", listen,
		// Answers are sized by max_tokens; this only has to be large enough
		// never to cap them.
		"-output-tokens", "4096",
		"-ttft", "0s", "-itl", "0s",
	}, filepath.Join(dir, "fakevllm.log"), func(line string) {
		if _, u, ok := strings.Cut(line, "listening on "); ok {
			select {
			case urlc <- strings.TrimSpace(u):
			default:
			}
		}
	})
	if err != nil {
		return nil, "", err
	}
	select {
	case u := <-urlc:
		if err := waitHTTP(ctx, c, u+"/health", 15*time.Second); err != nil {
			return c, "", err
		}
		return c, u, nil
	case <-c.exited:
		return c, "", fmt.Errorf("fakevllm exited at start (%v): %s", c.waitErr, c.logTail())
	case <-time.After(15 * time.Second):
		return c, "", fmt.Errorf("fakevllm printed no address within 15 s: %s", c.logTail())
	case <-ctx.Done():
		return c, "", context.Cause(ctx)
	}
}

// startProxy runs `auditproxy serve` in front of upstream, shipping to
// forward when it is not empty, and waits for its admin /readyz to answer
// 200. Everything else is the product's default: sync durability, a signed
// log.
func startProxy(ctx context.Context, g *procGroup, name, bin, upstream, forward, dir string, extra ...string) (*child, string, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, "", err
	}
	listen := "127.0.0.1:" + strconv.Itoa(ports[0])
	admin := "127.0.0.1:" + strconv.Itoa(ports[1])
	dataDir := filepath.Join(dir, name+"-data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, "", err
	}
	args := []string{"serve", "--upstream", upstream, "--listen", listen, "--admin-listen", admin, "--data-dir", dataDir}
	if forward != "" {
		args = append(args, "--forward", forward)
	}
	c, err := g.start(name, bin, append(args, extra...), filepath.Join(dir, name+".log"), nil)
	if err != nil {
		return nil, "", err
	}
	if err := waitHTTP(ctx, c, "http://"+admin+"/readyz", 30*time.Second); err != nil {
		return c, "", err
	}
	return c, "http://" + listen, nil
}

// freePorts reserves n loopback ports by listening and closing. Another
// process could take one in between; the proxy would then fail to start and
// say so.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitHTTP polls url until it answers 200, the child exits, or limit passes.
func waitHTTP(ctx context.Context, c *child, url string, limit time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(limit)
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-c.exited:
			return fmt.Errorf("%s exited before %s answered 200 (%v); log:\n%s", c.name, url, c.waitErr, c.logTail())
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready: %s did not answer 200 within %v (last: %s); log:\n%s", c.name, url, limit, last, c.logTail())
		}
	}
}

// cpuTime returns the user+system CPU time a process and its descendants
// (nginx's workers) have used, from /proc; ok is false where that is not
// available.
func cpuTime(pid int) (time.Duration, bool) {
	var total time.Duration
	ok := false
	for _, p := range procTree(pid) {
		f, err := procStat(p)
		if err != nil || len(f) < 13 {
			continue
		}
		// utime and stime are fields 14 and 15 of stat, in clock ticks
		// (USER_HZ, 100 on Linux).
		u, err1 := strconv.ParseInt(f[11], 10, 64)
		s, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		total += time.Duration(u+s) * (time.Second / 100)
		ok = true
	}
	return total, ok
}

// rssBytes returns the resident memory of a process and its descendants,
// from /proc/PID/status (VmRSS).
func rssBytes(pid int) (int64, bool) {
	var total int64
	ok := false
	for _, p := range procTree(pid) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/status")
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			if v, found := strings.CutPrefix(line, "VmRSS:"); found {
				f := strings.Fields(v)
				if len(f) == 2 && f[1] == "kB" {
					if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
						total += kb << 10
						ok = true
					}
				}
			}
		}
	}
	return total, ok
}

// procStat returns the fields of /proc/PID/stat after the command name
// (field 3, the state, is the first).
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	// The command name (field 2) may hold spaces; fields after it are
	// counted from its closing parenthesis.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// procTree returns pid and its live descendants.
func procTree(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return []int{pid}
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f, err := procStat(p); err == nil && len(f) > 1 {
			if pp, err := strconv.Atoi(f[1]); err == nil {
				children[pp] = append(children[pp], p)
			}
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}
