package audit

import (
	"bytes"
	"encoding/json"
	"time"
)

// opsEvent is the wire form of an operational event:
//
//	{"v":1,"type":"<type>","id":"<uuid>","time":"…","details":{…},"source":{…}}
type opsEvent struct {
	V       int       `json:"v"`
	Type    string    `json:"type"`
	ID      string    `json:"id"`
	Time    Timestamp `json:"time"`
	Details any       `json:"details"`
	Source  Source    `json:"source"`
}

// NewOpsEvent returns an operational event of type typ with details (any
// value encoding/json accepts) as JSON.
func NewOpsEvent(typ string, details any, src Source, now time.Time) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(opsEvent{V: SchemaVersion, Type: typ, ID: NewID(), Time: Timestamp(now), Details: details, Source: src})
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), err
}
