package gpu

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// SelectionKind says what a Selection selects.
type SelectionKind uint8

const (
	// SelectDefault: the value selects nothing by itself ("" or "void");
	// the next source in the precedence decides, and in the end every GPU.
	SelectDefault SelectionKind = iota
	// SelectAll: every GPU NVML sees ("all").
	SelectAll
	// SelectNone: no GPU ("none"); Read returns an Identity without devices.
	SelectNone
	// SelectList: the GPUs and MIG devices named in Selection.Entries.
	SelectList
)

// Selection is a parsed NVIDIA_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES value
// or explicit GPU list.
type Selection struct {
	Kind SelectionKind
	// Entries are the named devices of a SelectList, in the order given,
	// without repeats.
	Entries []Entry
}

// Entry names one device of a list: an NVML index, or a UUID.
type Entry struct {
	// Index is the GPU index; meaningful only when UUID is "".
	Index int
	// UUID is a GPU UUID ("GPU-…") or a MIG device UUID ("MIG-…"). As with
	// CUDA_VISIBLE_DEVICES it may be a prefix, which must match exactly one
	// device.
	UUID string
}

func (e Entry) String() string {
	if e.UUID != "" {
		return e.UUID
	}
	return strconv.Itoa(e.Index)
}

func (e Entry) isMIG() bool { return strings.HasPrefix(e.UUID, "MIG-") }

// String returns the selection in the syntax ParseVisible accepts: "",
// "all", "none", or the comma-separated entries.
func (s Selection) String() string {
	switch s.Kind {
	case SelectAll:
		return "all"
	case SelectNone:
		return "none"
	case SelectList:
		parts := make([]string, len(s.Entries))
		for i, e := range s.Entries {
			parts[i] = e.String()
		}
		return strings.Join(parts, ",")
	}
	return ""
}

// ParseVisible parses a NVIDIA_VISIBLE_DEVICES or CUDA_VISIBLE_DEVICES value:
//
//   - "" (or only blanks) and "void": SelectDefault, the value does not
//     restrict (the container runtime's "void" means it injected nothing;
//     whatever GPUs NVML still sees came another way);
//   - "all": SelectAll;
//   - "none": SelectNone;
//   - a comma-separated list of GPU indexes ("0,2") and/or UUIDs
//     ("GPU-3f1c…", "MIG-9a2b…", or a unique prefix of one): SelectList.
//
// Keywords are case-insensitive and must stand alone; blanks around entries
// are ignored; a repeated entry counts once. Anything else is an error that
// names the entry and its position: an empty entry ("0,,1"), a negative or
// non-numeric index, a UUID with characters other than hex digits and '-',
// or the legacy "MIG-GPU-<uuid>/<gi>/<ci>" form (use the MIG device UUID
// that nvidia-smi -L prints).
func ParseVisible(s string) (sel Selection, err error) {
	sel, err = parseVisible(s)
	if err != nil {
		return Selection{}, fmt.Errorf("gpu: GPU selection %q: %w", s, err)
	}
	return sel, nil
}

func parseVisible(s string) (Selection, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Selection{Kind: SelectDefault}, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) == 1 {
		switch strings.ToLower(s) {
		case "void":
			return Selection{Kind: SelectDefault}, nil
		case "all":
			return Selection{Kind: SelectAll}, nil
		case "none":
			return Selection{Kind: SelectNone}, nil
		}
	}
	sel := Selection{Kind: SelectList, Entries: make([]Entry, 0, len(parts))}
	seen := make(map[Entry]bool, len(parts))
	for i, p := range parts {
		e, err := parseEntry(strings.TrimSpace(p))
		if err != nil {
			return Selection{}, fmt.Errorf("entry %d %q: %w", i+1, strings.TrimSpace(p), err)
		}
		if !seen[e] {
			seen[e] = true
			sel.Entries = append(sel.Entries, e)
		}
	}
	return sel, nil
}

func parseEntry(p string) (Entry, error) {
	switch strings.ToLower(p) {
	case "":
		return Entry{}, fmt.Errorf("empty entry")
	case "all", "none", "void":
		return Entry{}, fmt.Errorf("%q must be the whole value, not part of a list", strings.ToLower(p))
	}
	if strings.HasPrefix(p, "GPU-") || strings.HasPrefix(p, "MIG-") {
		rest := p[len("GPU-"):]
		if strings.HasPrefix(p, "MIG-GPU-") || strings.Contains(rest, "/") {
			return Entry{}, fmt.Errorf("legacy MIG-GPU-<uuid>/<gi>/<ci> form is not supported: use the MIG device UUID (nvidia-smi -L)")
		}
		if rest == "" {
			return Entry{}, fmt.Errorf("UUID is empty after %q", p)
		}
		for _, c := range rest {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == '-') {
				return Entry{}, fmt.Errorf("not a UUID: %q is not a hex digit or '-'", c)
			}
		}
		return Entry{UUID: p}, nil
	}
	if p[0] >= '0' && p[0] <= '9' || p[0] == '-' || p[0] == '+' {
		n, err := strconv.Atoi(p)
		switch {
		case err != nil:
			return Entry{}, fmt.Errorf("not a GPU index")
		case n < 0:
			return Entry{}, fmt.Errorf("negative GPU index")
		}
		return Entry{Index: n}, nil
	}
	return Entry{}, fmt.Errorf(`want a GPU index (0, 1, …), a UUID (GPU-… or MIG-…), "all", "none" or "void"`)
}

// Names of the sources of a selection, as used in error messages.
const (
	srcExplicit = "GPU list"
	srcCUDA     = "CUDA_VISIBLE_DEVICES"
	srcNVIDIA   = "NVIDIA_VISIBLE_DEVICES"
	srcDefault  = "default (all GPUs)"
)

// chooseSelection applies the precedence explicit list > CUDA_VISIBLE_DEVICES
// > NVIDIA_VISIBLE_DEVICES > all, and returns the selection with the name of
// its source. A source whose value is SelectDefault ("", "void", unset)
// passes on to the next; sources after the deciding one are not parsed.
func chooseSelection(visible []string) (Selection, string, error) {
	if len(visible) > 0 {
		v := strings.Join(visible, ",")
		sel, err := parseVisible(v)
		if err != nil {
			return Selection{}, "", fmt.Errorf("gpu: %s %q: %w", srcExplicit, v, err)
		}
		if sel.Kind != SelectDefault {
			return sel, srcExplicit, nil
		}
	}
	for _, name := range []string{srcCUDA, srcNVIDIA} {
		v := os.Getenv(name)
		sel, err := parseVisible(v)
		if err != nil {
			return Selection{}, "", fmt.Errorf("gpu: %s=%q: %w", name, v, err)
		}
		if sel.Kind != SelectDefault {
			return sel, name, nil
		}
	}
	return Selection{Kind: SelectAll}, srcDefault, nil
}
