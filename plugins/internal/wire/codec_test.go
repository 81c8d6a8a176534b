package wire

import (
	"net/http"
	"reflect"
	"testing"

	"google.golang.org/grpc/mem"
)

func TestFrameRoundTrip(t *testing.T) {
	t.Parallel()
	cases := []Frame{
		{},
		{Flags: FlagEnd, Body: []byte("tail")},
		{Flags: FlagHead | FlagEnd | FlagTLS, Target: 1 << 40, Method: "POST", Host: "h", URI: "/a?b=c",
			Proto: "HTTP/1.1", RemoteAddr: "1.2.3.4:5", ContentLength: -1,
			Header: http.Header{"X-A": {"1", "2"}, "Empty": {}}, Body: []byte("body")},
		{Flags: FlagHead | FlagFlush, Status: 599, Header: http.Header{"Content-Type": {"text/plain"}}},
		{Flags: FlagEnd, Trailer: http.Header{"X-Sum": {"abc"}}},
		{Flags: FlagError, Body: []byte("last"), Error: "http: request body too large", Limit: 1 << 20},
		{Flags: FlagError, Error: "invalid byte in chunk length"},
	}
	c := codec{}
	for i, f := range cases {
		out, err := c.Marshal(&f)
		if err != nil {
			t.Fatal(err)
		}
		// Split the encoding to exercise the multi-buffer path.
		b := out.Materialize()
		split := mem.BufferSlice{mem.SliceBuffer(b[:len(b)/2]), mem.SliceBuffer(b[len(b)/2:])}
		var got Frame
		if err := c.Unmarshal(split, &got); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if len(got.Body) == 0 && len(f.Body) == 0 {
			got.Body, f.Body = nil, nil
		}
		if !reflect.DeepEqual(got, f) {
			t.Fatalf("case %d:\n got %+v\nwant %+v", i, got, f)
		}
		// The Mux's ways: the body written after AppendHeadTo's bytes, and
		// decoded in place. Compared decoded: header fields are encoded in
		// map order, which differs from one encoding to the next.
		if f.Flags&FlagError == 0 {
			var viaHead Frame
			if err := viaHead.DecodeShared(append(f.AppendHeadTo(nil), f.Body...)); err != nil {
				t.Fatalf("case %d: AppendHeadTo+Body: %v", i, err)
			}
			if len(viaHead.Body) == 0 {
				viaHead.Body = nil
			}
			if !reflect.DeepEqual(viaHead, f) {
				t.Fatalf("case %d: AppendHeadTo+Body\n got %+v\nwant %+v", i, viaHead, f)
			}
		}
		var shared Frame
		if err := shared.DecodeShared(b); err != nil {
			t.Fatalf("case %d: DecodeShared: %v", i, err)
		}
		if len(shared.Body) == 0 {
			shared.Body = nil
		}
		if !reflect.DeepEqual(shared, f) {
			t.Fatalf("case %d: DecodeShared\n got %+v\nwant %+v", i, shared, f)
		}
	}
}

func TestFrameTruncated(t *testing.T) {
	t.Parallel()
	f := Frame{Flags: FlagHead, Method: "GET", URI: "/", Header: http.Header{"A": {"b"}}, Body: []byte("xyz")}
	out, _ := codec{}.Marshal(&f)
	b := out.Materialize()
	for n := 0; n < len(b); n++ {
		var got Frame
		if err := (codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b[:n])}, &got); err == nil {
			t.Fatalf("%d of %d bytes decoded without error", n, len(b))
		}
	}
}

// TestFrameDecodeOwnsHeaders: a decoded frame's strings and header values
// are its own (they share one copy of the head, see reader.share): the
// encoding may be reused, and appending to one header's values leaves the
// others as they were.
func TestFrameDecodeOwnsHeaders(t *testing.T) {
	t.Parallel()
	f := Frame{Flags: FlagHead | FlagEnd, Method: "GET", URI: "/x", RemoteAddr: "1.2.3.4:5",
		Header:  http.Header{"A": {"1", "2"}, "B": {"3"}, "C": {"4", "5", "6"}},
		Trailer: http.Header{"T": {"7"}}, Body: []byte("body")}
	for _, shared := range []bool{false, true} {
		b := f.AppendTo(nil)
		var got Frame
		decode := got.Decode
		if shared {
			decode = got.DecodeShared
		}
		if err := decode(b); err != nil {
			t.Fatal(err)
		}
		if !shared {
			clear(b) // the encoding's buffer goes back to a pool
		}
		for k := range got.Header {
			got.Header[k] = append(got.Header[k], "appended")
		}
		got.Trailer["T"] = append(got.Trailer["T"], "appended")
		want := Frame{Flags: f.Flags, Method: "GET", URI: "/x", RemoteAddr: "1.2.3.4:5",
			Header:  http.Header{"A": {"1", "2", "appended"}, "B": {"3", "appended"}, "C": {"4", "5", "6", "appended"}},
			Trailer: http.Header{"T": {"7", "appended"}}, Body: []byte("body")}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("shared %v:\n got %+v\nwant %+v", shared, got, want)
		}
	}
}
