// Command forwardrecv runs the Fluentd forward-protocol receiver of package
// internal/forwardrecv as its own process: an aggregator for the shipper to
// send to in manual tests and load runs.
//
//	forwardrecv -listen 127.0.0.1:24224 [-tls-cert FILE -tls-key FILE] [-mode ack|withhold|drop] [-print]
//
// With -print it writes each accepted entry to stdout as one JSON line,
// {"tag":…,"time":…,"conn":…,"record":{…}} (bin values in base64); without
// it, it keeps nothing and logs counts to stderr every second. It serves
// until SIGINT or SIGTERM, then logs the final counts.
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/auditproxy/auditproxy/internal/forwardrecv"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:24224", "address to listen on (port 0 picks a free one)")
	certFile := flag.String("tls-cert", "", "PEM certificate file: serve TLS (needs -tls-key)")
	keyFile := flag.String("tls-key", "", "PEM private key file for -tls-cert")
	modeName := flag.String("mode", "ack", "what to do with messages that ask for an ack: ack, withhold (never reply) or drop (close the connection)")
	printJSON := flag.Bool("print", false, "print each entry to stdout as a JSON line")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("forwardrecv: ")
	if flag.NArg() > 0 {
		log.Fatalf("unexpected arguments %q", flag.Args())
	}

	modes := map[string]forwardrecv.Mode{"ack": forwardrecv.Ack, "withhold": forwardrecv.WithholdAck, "drop": forwardrecv.DropConn}
	mode, ok := modes[*modeName]
	if !ok {
		log.Fatalf("-mode %q: want ack, withhold or drop", *modeName)
	}

	cfg := forwardrecv.Config{Discard: true}
	if (*certFile == "") != (*keyFile == "") {
		log.Fatal("-tls-cert and -tls-key go together")
	}
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			log.Fatal(err)
		}
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if *printJSON {
		var mu sync.Mutex
		enc := json.NewEncoder(os.Stdout)
		cfg.OnEntry = func(e forwardrecv.Entry) {
			line := struct {
				Tag    string         `json:"tag"`
				Time   time.Time      `json:"time"`
				Conn   int            `json:"conn"`
				Record map[string]any `json:"record"`
			}{e.Tag, e.Time, e.Conn, e.Record}
			mu.Lock()
			defer mu.Unlock()
			if err := enc.Encode(line); err != nil {
				// A float NaN or ±Inf has no JSON form.
				log.Printf("conn %d: entry of tag %q: %v", e.Conn, e.Tag, err)
			}
		}
	}

	r, err := forwardrecv.Start(*listen, cfg)
	if err != nil {
		log.Fatal(err)
	}
	r.SetMode(mode)
	scheme := "tcp"
	if cfg.TLS != nil {
		scheme = "tls"
	}
	// The resolved address lets a parent that asked for port 0 learn where
	// to connect.
	log.Printf("listening on %s://%s, mode %v", scheme, r.Addr(), mode)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last forwardrecv.Stats
	for {
		select {
		case <-tick.C:
			if *printJSON {
				continue
			}
			s := r.Stats()
			if s != last {
				log.Print(counts(s, s.Entries-last.Entries))
			}
			last = s
		case <-sig:
			r.Close()
			log.Print("closed: " + counts(r.Stats(), -1))
			return
		}
	}
}

func counts(s forwardrecv.Stats, perSecond int64) string {
	out := fmt.Sprintf("entries %d", s.Entries)
	if perSecond >= 0 {
		out += fmt.Sprintf(" (+%d/s)", perSecond)
	}
	out += fmt.Sprintf(", messages %d, bytes %d, acks %d, withheld %d, dropped %d, connections %d (%d open), errors %d",
		s.Messages, s.Bytes, s.Acks, s.Withheld, s.Dropped, s.Connections, s.Open, s.Errors)
	if s.LastError != "" {
		out += ", last error: " + s.LastError
	}
	return out
}
