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
