package fakevllm

import (
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/valyala/fastjson"
)

// sdkField is the method set of respjson.Field in both SDKs: the metadata
// their decoders keep about each member of a decoded value.
type sdkField interface {
	Valid() bool
	Raw() string
}

// checkDecoded walks a value an official SDK decoded and reports every
// member whose JSON does not have the kind its Go type needs. The SDK
// decoders are lenient (they turn 7 into "7" and mark it valid), so the raw
// JSON they keep for each member is checked against the member's Go kind.
// vLLM leaves out members the SDKs call required (Anthropic's container,
// stop_details...), so absence is not an error here; a wrong kind is.
func checkDecoded(t *testing.T, what string, v any) {
	t.Helper()
	walkDecoded(t, what, reflect.ValueOf(v), 0)
}

func walkDecoded(t *testing.T, path string, v reflect.Value, depth int) {
	t.Helper()
	if depth > 12 {
		return
	}
	switch v.Kind() {
	case reflect.Interface, reflect.Pointer:
		if !v.IsNil() {
			walkDecoded(t, path, v.Elem(), depth+1)
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			walkDecoded(t, path+"["+strconv.Itoa(i)+"]", v.Index(i), depth+1)
		}
	case reflect.Struct:
		meta := v.FieldByName("JSON")
		for i := 0; i < v.NumField(); i++ {
			sf := v.Type().Field(i)
			if sf.Name == "JSON" || !sf.IsExported() {
				continue
			}
			if meta.IsValid() && meta.Kind() == reflect.Struct {
				if m := meta.FieldByName(sf.Name); m.IsValid() && m.CanInterface() {
					if fld, ok := m.Interface().(sdkField); ok {
						if raw := fld.Raw(); raw != "" && raw != "null" && !kindMatches(sf.Type, raw) {
							t.Errorf("%s.%s: %s does not fit the SDK's %s", path, sf.Name, raw, sf.Type)
						}
					}
				}
			}
			walkDecoded(t, path+"."+sf.Name, v.Field(i), depth+1)
		}
	}
}

// kindMatches reports whether the raw JSON value is of the kind a Go type
// decodes from.
func kindMatches(typ reflect.Type, raw string) bool {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	c := raw[0]
	switch typ.Kind() {
	case reflect.String:
		return c == '"'
	case reflect.Bool:
		return raw == "true" || raw == "false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		_, err := strconv.ParseInt(raw, 10, 64)
		return err == nil
	case reflect.Float32, reflect.Float64:
		_, err := strconv.ParseFloat(raw, 64)
		return err == nil && c != '"'
	case reflect.Slice:
		if typ.Elem().Kind() == reflect.Uint8 {
			return true // raw JSON kept as bytes
		}
		return c == '['
	case reflect.Array:
		return c == '['
	case reflect.Map:
		return c == '{'
	case reflect.Struct:
		// Unions are structs that hold any of their variants' values.
		return c == '{' || strings.HasSuffix(typ.Name(), "Union")
	}
	return true
}

// streamed reports whether vLLM would stream its answer to body.
func streamed(body []byte) bool {
	var p fastjson.Parser
	v, err := p.ParseBytes(body)
	if err != nil {
		return false
	}
	st := member(v, "stream")
	if st == nil {
		return false
	}
	b, _ := pyBool(st)
	return b
}
