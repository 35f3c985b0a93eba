package auditlog

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/valyala/fastjson"

	"github.com/auditproxy/auditproxy/audit"
)

// CheckpointFileName is the file a CheckpointDir appends to.
const CheckpointFileName = "checkpoints.ndjson"

// CheckpointDir keeps a second copy of every checkpoint event, apart from
// the spool and the aggregator (a separate volume or mount): one JSON line
// per checkpoint, appended and fsynced. A log whose tail was cut together
// with its checkpoints still has its newer checkpoints here, and a verifier
// given both sees what is missing.
type CheckpointDir struct {
	f    *os.File
	log  *slog.Logger
	ch   chan []byte
	done chan struct{}
}

// OpenCheckpointDir opens (creating) dir's checkpoint file and returns its
// last checkpoint event, nil if none.
func OpenCheckpointDir(dir string, logger *slog.Logger) (*CheckpointDir, []byte, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("checkpoint dir: %w", err)
	}
	path := filepath.Join(dir, CheckpointFileName)
	var last []byte
	if b, err := os.ReadFile(path); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		var p fastjson.Parser
		for sc.Scan() {
			// Only a checkpoint event counts (its top-level type, parsed), so
			// that a line cut by a crash or anything else in the file is not
			// cited as the previous checkpoint.
			line := bytes.TrimSpace(sc.Bytes())
			if v, err := p.ParseBytes(line); err == nil && string(v.GetStringBytes("type")) == audit.TypeCheckpoint &&
				len(v.GetStringBytes("checkpoint", "note")) > 0 {
				last = append(last[:0], line...)
			}
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint dir: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &CheckpointDir{f: f, log: logger, ch: make(chan []byte, 256), done: make(chan struct{})}
	go c.run()
	return c, last, nil
}

// Write queues cp's event; the copy is written in the background
// so that the spool's committer does not wait for a second disk.
func (c *CheckpointDir) Write(cp SignedCheckpoint) { c.ch <- cp.Event }

func (c *CheckpointDir) run() {
	defer close(c.done)
	for ev := range c.ch {
		_, err := c.f.Write(append(ev, '\n'))
		if err == nil {
			err = c.f.Sync()
		}
		if err != nil {
			c.log.Error("cannot write a checkpoint to the checkpoint dir", "err", err)
		}
	}
}

// Close writes what is queued and closes the file.
func (c *CheckpointDir) Close() error {
	close(c.ch)
	<-c.done
	return c.f.Close()
}
