package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The peers are plain reverse proxies that do no auditing at all, measured
// beside auditproxy (auditing everything): the floor for a Go proxy, and
// the proxies users put in front of vLLM today, configured as a careful
// operator would for LLM traffic:
//
//   - fasthttp (tables: "fasthttp (bare proxy)"): bench/cmd/bareproxy, a
//     bare fasthttp reverse proxy with auditproxy's own fasthttp server and
//     client settings, header handling and choice between buffering and
//     streaming an answer, and nothing else: no hashing, no events, no log.
//     auditproxy against it is the cost of auditing; against nginx and
//     HAProxy, that plus the cost of proxying in Go on fasthttp. The harness
//     builds it from this tree (-bare-bin skips the build).
//   - nginx: proxy_pass to an upstream block with keepalive (HTTP/1.1,
//     Connection cleared), access_log off, 2 worker processes (the
//     machine's cores), proxy_buffering and proxy_request_buffering off
//     so SSE chunks pass at once.
//   - HAProxy: mode http, 2 threads, keep-alive with http-reuse always, and
//     option http-no-delay, without which HAProxy holds small SSE chunks
//     back to merge them (measured: +107 ms per chunk at p50).
//
// nginx and HAProxy come from the distribution's packages (apt-get install
// nginx-light haproxy), which the harness installs when they are missing
// and it runs as root with apt-get (-install-peers).

var peerPackages = map[string]string{"nginx": "nginx-light", "haproxy": "haproxy"}

// findPeer returns the path of a peer's binary, installing its package
// with apt-get when allowed. It returns "" and a reason when the peer is
// not available.
func findPeer(ctx context.Context, name string, install bool, logf func(string, ...any)) (string, string) {
	bin := name
	if p, err := exec.LookPath(bin); err == nil {
		return p, ""
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin"} {
		if p := filepath.Join(dir, bin); isExecutable(p) {
			return p, ""
		}
	}
	if !install {
		return "", name + " is not installed (-install-peers=false)"
	}
	apt, err := exec.LookPath("apt-get")
	if err != nil || os.Geteuid() != 0 {
		return "", name + " is not installed, and apt-get is not available to root here"
	}
	logf("installing %s with apt-get", peerPackages[name])
	cmd := exec.CommandContext(ctx, apt, "install", "-y", "--no-install-recommends", peerPackages[name])
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		// The package lists may be missing on a fresh image.
		if upd, uerr := exec.CommandContext(ctx, apt, "update").CombinedOutput(); uerr != nil {
			return "", fmt.Sprintf("apt-get install %s: %v: %s; apt-get update: %v: %s", peerPackages[name], err, tail(out), uerr, tail(upd))
		}
		if out, err := exec.CommandContext(ctx, apt, "install", "-y", "--no-install-recommends", peerPackages[name]).CombinedOutput(); err != nil {
			return "", fmt.Sprintf("apt-get install %s: %v: %s", peerPackages[name], err, tail(out))
		}
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
		if p := filepath.Join(dir, bin); isExecutable(p) {
			// The package may have started a system instance on port
			// 80; it does not matter: ours listen elsewhere.
			return p, ""
		}
	}
	return "", name + " still not found after installing " + peerPackages[name]
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = "…" + s[len(s)-300:]
	}
	return s
}

// peerVersion asks a peer binary for its version line.
func peerVersion(bin string) string {
	out, _ := exec.Command(bin, "-v").CombinedOutput() // nginx writes it to stderr
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// startNginx runs nginx in the foreground in front of upstream (host:port)
// and waits until it proxies.
func startNginx(ctx context.Context, g *procGroup, bin, upstream, dir string) (*child, string, error) {
	port, err := freePorts(1)
	if err != nil {
		return nil, "", err
	}
	root := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(filepath.Join(root, "logs"), 0o755); err != nil {
		return nil, "", err
	}
	listen := "127.0.0.1:" + strconv.Itoa(port[0])
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path %[1]s/client_body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  client_max_body_size 64m;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  upstream vllm {
    server %[2]s;
    keepalive 1024;
    keepalive_requests 1000000;
  }
  server {
    listen %[3]s backlog=8192;
    location / {
      proxy_pass http://vllm;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 300s;
    }
  }
}
`, root, upstream, listen)
	confPath := filepath.Join(root, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, "", err
	}
	return startPeer(ctx, g, "nginx", bin, []string{"-p", root, "-c", confPath, "-e", filepath.Join(root, "logs", "error.log")}, listen, dir)
}

// startPeer runs a peer in the foreground and waits until it proxies the
// fake's /health.
func startPeer(ctx context.Context, g *procGroup, name, bin string, args []string, listen, dir string) (*child, string, error) {
	c, err := g.start(name, bin, args, filepath.Join(dir, name+".log"), nil)
	if err != nil {
		return nil, "", err
	}
	u := "http://" + listen
	if err := waitHTTP(ctx, c, u+"/health", 15*time.Second); err != nil {
		return c, "", err
	}
	return c, u, nil
}

// startHAProxy runs HAProxy in the foreground in front of upstream
// (host:port) and waits until it proxies.
func startHAProxy(ctx context.Context, g *procGroup, bin, upstream, dir string) (*child, string, error) {
	port, err := freePorts(1)
	if err != nil {
		return nil, "", err
	}
	listen := "127.0.0.1:" + strconv.Itoa(port[0])
	conf := fmt.Sprintf(`global
  nbthread 2
  maxconn 9000 # fits a 20,000 file limit: two sockets per connection
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  option http-keep-alive
  option http-no-delay
  http-reuse always
frontend clients
  bind %s
  default_backend vllm
backend vllm
  server fake %s maxconn 8000
`, listen, upstream)
	confPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, "", err
	}
	return startPeer(ctx, g, "haproxy", bin, []string{"-db", "-f", confPath}, listen, dir)
}

// bareProxyLabel is what tables call the fasthttp peer.
const bareProxyLabel = "fasthttp (bare proxy)"

// startBareProxy runs bench/cmd/bareproxy in front of upstream (host:port)
// and waits until it proxies.
func startBareProxy(ctx context.Context, g *procGroup, bin, upstream, dir string) (*child, string, error) {
	port, err := freePorts(1)
	if err != nil {
		return nil, "", err
	}
	listen := "127.0.0.1:" + strconv.Itoa(port[0])
	return startPeer(ctx, g, "bareproxy", bin, []string{"-listen", listen, "-upstream", "http://" + upstream}, listen, dir)
}

// startForwardRecv runs bench/cmd/forwardrecv, the forward-protocol
// receiver that acks every message: the aggregator auditproxy ships to.
func startForwardRecv(ctx context.Context, g *procGroup, bin, dir string) (*child, string, error) {
	port, err := freePorts(1)
	if err != nil {
		return nil, "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port[0])
	c, err := g.start("forwardrecv", bin, []string{"-listen", addr}, filepath.Join(dir, "forwardrecv.log"), nil)
	if err != nil {
		return nil, "", err
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if conn, err := dialTCP(addr); err == nil {
			conn.Close()
			return c, addr, nil
		}
		select {
		case <-c.exited:
			return c, "", fmt.Errorf("forwardrecv exited at start (%v): %s", c.waitErr, c.logTail())
		case <-ctx.Done():
			return c, "", context.Cause(ctx)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return c, "", fmt.Errorf("forwardrecv not listening on %s within 15 s: %s", addr, c.logTail())
		}
	}
}

func dialTCP(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, time.Second) }
