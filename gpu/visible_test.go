package gpu

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseVisible(t *testing.T) {
	const u = "GPU-3f1c2a4e-9b7d-4e2a-8c1f-0a1b2c3d4e5f"
	const m = "MIG-9a2b7c1d-5e6f-4a3b-8c2d-1e0f9a8b7c6d"
	tests := []struct {
		in   string
		want Selection
		str  string // want.String()
	}{
		{in: "", want: Selection{Kind: SelectDefault}},
		{in: "  ", want: Selection{Kind: SelectDefault}},
		{in: "void", want: Selection{Kind: SelectDefault}},
		{in: "VOID", want: Selection{Kind: SelectDefault}},
		{in: "all", want: Selection{Kind: SelectAll}, str: "all"},
		{in: " All ", want: Selection{Kind: SelectAll}, str: "all"},
		{in: "none", want: Selection{Kind: SelectNone}, str: "none"},
		{in: "0", want: Selection{Kind: SelectList, Entries: []Entry{{Index: 0}}}, str: "0"},
		{in: "0,2", want: Selection{Kind: SelectList, Entries: []Entry{{Index: 0}, {Index: 2}}}, str: "0,2"},
		{in: " 3 , 1 ", want: Selection{Kind: SelectList, Entries: []Entry{{Index: 3}, {Index: 1}}}, str: "3,1"},
		{in: "1,1,0", want: Selection{Kind: SelectList, Entries: []Entry{{Index: 1}, {Index: 0}}}, str: "1,0"},
		{in: u, want: Selection{Kind: SelectList, Entries: []Entry{{UUID: u}}}, str: u},
		{in: "GPU-3f1c", want: Selection{Kind: SelectList, Entries: []Entry{{UUID: "GPU-3f1c"}}}, str: "GPU-3f1c"},
		{in: m + ",0," + u, want: Selection{Kind: SelectList, Entries: []Entry{{UUID: m}, {Index: 0}, {UUID: u}}},
			str: m + ",0," + u},
	}
	for _, tt := range tests {
		got, err := ParseVisible(tt.in)
		if err != nil {
			t.Errorf("ParseVisible(%q): %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseVisible(%q) = %+v; want %+v", tt.in, got, tt.want)
		}
		if s := got.String(); s != tt.str {
			t.Errorf("ParseVisible(%q).String() = %q; want %q", tt.in, s, tt.str)
		}
	}
}

func TestParseVisibleErrors(t *testing.T) {
	tests := []struct {
		in   string
		want []string // substrings of the error
	}{
		{"0,,1", []string{`gpu: GPU selection "0,,1": entry 2 "": empty entry`}},
		{"0,", []string{`entry 2 "": empty entry`}},
		{"0,all", []string{`entry 2 "all": "all" must be the whole value`}},
		{"none,1", []string{`entry 1 "none": "none" must be the whole value`}},
		{"-1", []string{`entry 1 "-1": negative GPU index`}},
		{"1a", []string{`entry 1 "1a": not a GPU index`}},
		{"99999999999999999999", []string{"not a GPU index"}},
		{"gpu0", []string{`entry 1 "gpu0": want a GPU index (0, 1, …), a UUID (GPU-… or MIG-…), "all", "none" or "void"`}},
		{"nvidia.com/gpu=0", []string{`want a GPU index`}},
		{"GPU-", []string{`entry 1 "GPU-": UUID is empty`}},
		{"GPU-xyz", []string{`not a UUID: 'x'`}},
		{"MIG-GPU-3f1c2a4e-9b7d-4e2a-8c1f-0a1b2c3d4e5f/1/0", []string{"legacy MIG-GPU-<uuid>/<gi>/<ci> form is not supported"}},
		{"MIG-3f1c/1/0", []string{"legacy"}},
	}
	for _, tt := range tests {
		sel, err := ParseVisible(tt.in)
		if err == nil {
			t.Errorf("ParseVisible(%q) = %+v; want an error", tt.in, sel)
			continue
		}
		if !reflect.DeepEqual(sel, Selection{}) {
			t.Errorf("ParseVisible(%q) returned %+v with the error", tt.in, sel)
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ParseVisible(%q) error %q does not contain %q", tt.in, err, w)
			}
		}
	}
}

func TestChooseSelection(t *testing.T) {
	tests := []struct {
		name         string
		visible      []string
		cuda, nvidia string
		want         string // Selection.String()
		source       string
	}{
		{name: "nothing set", want: "all", source: srcDefault},
		{name: "NVIDIA", nvidia: "1,2", want: "1,2", source: srcNVIDIA},
		{name: "NVIDIA void", nvidia: "void", want: "all", source: srcDefault},
		{name: "CUDA over NVIDIA", cuda: "3", nvidia: "1,2", want: "3", source: srcCUDA},
		{name: "CUDA void passes on", cuda: "void", nvidia: "none", want: "none", source: srcNVIDIA},
		{name: "explicit over both", visible: []string{"4", "5"}, cuda: "3", nvidia: "1", want: "4,5", source: srcExplicit},
		{name: "explicit comma lists", visible: []string{"4,5", "6"}, want: "4,5,6", source: srcExplicit},
		{name: "explicit empty passes on", visible: []string{}, cuda: "all", want: "all", source: srcCUDA},
		{name: "explicit blank passes on", visible: []string{" "}, cuda: "2", want: "2", source: srcCUDA},
		{name: "explicit none", visible: []string{"none"}, cuda: "2", want: "none", source: srcExplicit},
		{name: "bad CUDA not parsed when explicit decides", visible: []string{"1"}, cuda: "bad", want: "1", source: srcExplicit},
		{name: "bad NVIDIA not parsed when CUDA decides", cuda: "0", nvidia: "bad", want: "0", source: srcCUDA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CUDA_VISIBLE_DEVICES", tt.cuda)
			t.Setenv("NVIDIA_VISIBLE_DEVICES", tt.nvidia)
			sel, source, err := chooseSelection(tt.visible)
			if err != nil {
				t.Fatal(err)
			}
			if sel.String() != tt.want || source != tt.source {
				t.Errorf("got %q from %s; want %q from %s", sel, source, tt.want, tt.source)
			}
		})
	}

	t.Run("errors name the source", func(t *testing.T) {
		t.Setenv("CUDA_VISIBLE_DEVICES", "")
		t.Setenv("NVIDIA_VISIBLE_DEVICES", "0;1")
		_, _, err := chooseSelection(nil)
		if err == nil || !strings.HasPrefix(err.Error(), `gpu: NVIDIA_VISIBLE_DEVICES="0;1": entry 1 "0;1": `) {
			t.Errorf("error = %v", err)
		}
	})
}
