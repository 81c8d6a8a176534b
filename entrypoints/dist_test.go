package entrypoints

import (
	"reflect"
	"slices"
	"testing"
)

// TestGroupsCoverDist checks the table of entry-point groups against the
// Dist type: every map field of Dist is exactly one group (so a new field
// without a row fails here), each group's kind searches it, and a kind's
// explicit protocol keys include every group of the kind.
func TestGroupsCoverDist(t *testing.T) {
	t.Parallel()
	dt := reflect.TypeOf(Dist{})
	var fields int
	for i := range dt.NumField() {
		f := dt.Field(i)
		if f.Type.Kind() != reflect.Map {
			continue
		}
		fields++
		t.Run(f.Name, func(t *testing.T) {
			t.Parallel()
			var d Dist
			m := reflect.MakeMap(f.Type)
			m.SetMapIndex(reflect.ValueOf("x"), reflect.Zero(f.Type.Elem()))
			reflect.ValueOf(&d).Elem().Field(i).Set(m)
			var in []Group
			for _, g := range Groups() {
				if d.Has(g.Protocol, "x") {
					in = append(in, g)
				}
				if names := d.Names(g.Protocol); d.Has(g.Protocol, "x") != slices.Equal(names, []string{"x"}) {
					t.Errorf("group %s: Has and Names (%v) disagree", g.Protocol, names)
				}
			}
			if len(in) != 1 {
				t.Fatalf("field %s is in %d groups, want 1", f.Name, len(in))
			}
			g := in[0]
			if !slices.Contains(g.Kind.Protocols(), g.Protocol) {
				t.Errorf("kind %s does not search group %s", g.Kind, g.Protocol)
			}
			if !slices.Contains(g.Kind.protocolKeys(), string(g.Protocol)) {
				t.Errorf("kind %s: protocol keys %v lack %s", g.Kind, g.Kind.protocolKeys(), g.Protocol)
			}
			if p, err := d.Find(g.Kind, "x"); err != nil || p != g.Protocol {
				t.Errorf("Find(%s, x) = %s, %v; want %s", g.Kind, p, err, g.Protocol)
			}
		})
	}
	if fields != len(Groups()) {
		t.Errorf("Dist has %d map fields, the table %d groups", fields, len(Groups()))
	}
	for k := range kinds {
		if Kind(k).String() == "unknown" || len(Kind(k).Protocols()) == 0 {
			t.Errorf("kind %d has no name or no group", k)
		}
	}
	if Kind(len(kinds)).String() != "unknown" || Kind(-1).String() != "unknown" {
		t.Error("an undefined kind has a name")
	}
}
