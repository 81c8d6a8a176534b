// Package wire is paster's plugin protocol: the gRPC codec, the messages and
// the hand-written service descriptions shared by the host and the plugin SDK.
//
// No protoc is involved. Our own services are called with the "paster"
// content-subtype (CallOption), so the gRPC server on either side picks Codec
// for them by the request's content type while go-plugin's internal services
// (broker, stdio, controller, health) keep protobuf on the same connection.
//
// Two message types cross the wire: Frame, a hand-encoded binary message for
// the HTTP data plane, and Blob, raw bytes that carry JSON for the control
// plane (describe, init, create, run), which is not on the request path.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
)

// CodecName is the content-subtype our services use ("application/grpc+paster").
const CodecName = "paster"

// CallCodec is the call option every client call on our services must carry.
var CallCodec = grpc.CallContentSubtype(CodecName)

// MaxMessage is the receive limit set on every gRPC server we build or
// configure (plugin server, host broker server). Bodies travel in chunks of
// ChunkSize, so only a huge header block could come near it.
const MaxMessage = 64 << 20

// ChunkSize is the largest body slice one Frame carries.
const ChunkSize = 128 << 10

func init() { encoding.RegisterCodecV2(codec{}) }

// codec marshals *Frame and *Blob.
type codec struct{}

func (codec) Name() string { return CodecName }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *Frame:
		n := m.size()
		pool := mem.DefaultBufferPool()
		bp := pool.Get(n)
		b := m.appendTo((*bp)[:0])
		*bp = b
		return mem.BufferSlice{mem.NewBuffer(bp, pool)}, nil
	case *Blob:
		return mem.BufferSlice{mem.SliceBuffer(m.Data)}, nil
	}
	return nil, fmt.Errorf("wire: cannot marshal %T", v)
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	var b []byte
	if len(data) == 1 {
		b = data[0].ReadOnlyData()
	} else {
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		b = buf.ReadOnlyData()
	}
	switch m := v.(type) {
	case *Frame:
		return m.decode(b)
	case *Blob:
		m.Data = append(m.Data[:0], b...)
		return nil
	}
	return fmt.Errorf("wire: cannot unmarshal into %T", v)
}

// Blob is an opaque control-plane message (JSON in practice).
type Blob struct{ Data []byte }

// Frame flags.
const (
	// FlagHead: the frame starts a request or response and carries its head.
	FlagHead uint16 = 1 << iota
	// FlagEnd: no more body follows (request body complete, response complete,
	// or, after a hijack, this direction of the tunnel closed).
	FlagEnd
	// FlagFlush: the receiver flushes what it has written so far.
	FlagFlush
	// FlagHijack: the response head says the handler hijacked the connection;
	// from now on Body in both directions is raw connection bytes.
	FlagHijack
	// FlagTLS: the request arrived over TLS.
	FlagTLS
	// FlagUpgradable: the request body is complete in the head and the sender
	// keeps its side open, so the handler may hijack the connection.
	FlagUpgradable
	// FlagError: reading the request body failed; the frame ends the body
	// after its Body bytes, and the receiver's reads fail with Error (an
	// *http.MaxBytesError when Limit is set).
	FlagError
)

// Frame is one message of an HTTP exchange, in either direction. The first
// frame each way has FlagHead; a small exchange is one frame each way
// (head, body and FlagEnd together).
type Frame struct {
	Flags uint16

	// Request head.
	Target        uint64 // instance (plugin side) or reference (host side) that serves it
	Method        string
	Host          string
	URI           string // request URI as received (path and query)
	Proto         string // "HTTP/1.1"
	RemoteAddr    string
	ContentLength int64

	// Response head.
	Status int

	Header  http.Header // with FlagHead
	Trailer http.Header // with FlagEnd, when non-empty
	Body    []byte

	// Request body failure, with FlagError: the error's text, and the
	// limit of a body over its size limit (http.MaxBytesError), else 0.
	Error string
	Limit int64
}

// AppendTo appends f's encoding (what Decode reads) to b.
func (f *Frame) AppendTo(b []byte) []byte { return f.appendTo(b) }

// Decode sets f from its encoding in b, reusing the capacity of f.Body; f
// keeps no reference to b. It fails on a truncated encoding.
func (f *Frame) Decode(b []byte) error { return f.decode(b) }

// Reset clears f, keeping the capacity of Body.
func (f *Frame) Reset() {
	body := f.Body[:0]
	*f = Frame{Body: body}
}

func (f *Frame) size() int {
	n := 2*binary.MaxVarintLen64 + len(f.Body)
	if f.Flags&FlagHead != 0 {
		n += 5*binary.MaxVarintLen64 + len(f.Method) + len(f.Host) + len(f.URI) + len(f.Proto) + len(f.RemoteAddr)
		n += headerSize(f.Header)
	}
	n += binary.MaxVarintLen64 + headerSize(f.Trailer)
	if f.Flags&FlagError != 0 {
		n += 2*binary.MaxVarintLen64 + len(f.Error)
	}
	return n
}

func headerSize(h http.Header) int {
	n := binary.MaxVarintLen64
	for k, vs := range h {
		n += 2*binary.MaxVarintLen64 + len(k)
		for _, v := range vs {
			n += binary.MaxVarintLen64 + len(v)
		}
	}
	return n
}

// AppendHeadTo appends f's encoding up to its body to b: followed by
// f.Body, it is AppendTo's (so that a sender can write a large body from
// where it is, without copying it). f must not have FlagError, whose fields
// follow the body.
func (f *Frame) AppendHeadTo(b []byte) []byte {
	if f.Flags&FlagError != 0 {
		panic("wire: AppendHeadTo of a frame with FlagError")
	}
	return f.appendHead(b)
}

func (f *Frame) appendTo(b []byte) []byte {
	b = f.appendHead(b)
	b = append(b, f.Body...)
	if f.Flags&FlagError != 0 {
		// After the body, where a decoder that predates FlagError stops.
		b = appendString(b, f.Error)
		b = binary.AppendVarint(b, f.Limit)
	}
	return b
}

func (f *Frame) appendHead(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(f.Flags))
	if f.Flags&FlagHead != 0 {
		b = binary.AppendUvarint(b, f.Target)
		b = appendString(b, f.Method)
		b = appendString(b, f.Host)
		b = appendString(b, f.URI)
		b = appendString(b, f.Proto)
		b = appendString(b, f.RemoteAddr)
		b = binary.AppendVarint(b, f.ContentLength)
		b = binary.AppendVarint(b, int64(f.Status))
		b = appendHeader(b, f.Header)
	}
	b = appendHeader(b, f.Trailer)
	return binary.AppendUvarint(b, uint64(len(f.Body)))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendHeader(b []byte, h http.Header) []byte {
	b = binary.AppendUvarint(b, uint64(len(h)))
	for k, vs := range h {
		b = appendString(b, k)
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendString(b, v)
		}
	}
	return b
}

var errShort = errors.New("wire: truncated frame")

// reader decodes an encoding. Its strings are substrings of s when s is
// set (one copy of the encoding's head, see decodeInto), else copies.
type reader struct {
	b   []byte
	err error

	s    string
	n    int      // len(b) when s was set: s is b[:len(s)] then
	vals []string // backing array for header values, when set
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if uint64(len(r.b)) < n {
		r.err = errShort
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) string() string {
	v := r.bytes()
	if r.s != "" && len(v) > 0 {
		if end := r.n - len(r.b); end <= len(r.s) {
			return r.s[end-len(v) : end]
		}
	}
	return string(v)
}

// skipHeader reads past a header's encoding and returns how many values
// it has.
func (r *reader) skipHeader() int {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err = errShort
	}
	vals := 0
	for i := uint64(0); i < n && r.err == nil; i++ {
		r.bytes()
		nv := r.uvarint()
		if nv > uint64(len(r.b)) {
			r.err = errShort
		}
		for j := uint64(0); j < nv && r.err == nil; j++ {
			r.bytes()
		}
		vals += int(nv)
	}
	return vals
}

// share makes the strings r decodes from here up to the body substrings of
// one copy, and its header values slices of one array: a head is three
// allocations (the copy, the values, the map) rather than one per string
// and one per header. It reads the encoding once to find their extent.
func (r *reader) share(head bool) {
	scan := reader{b: r.b}
	vals := 0
	if head {
		scan.uvarint()
		for range 5 {
			scan.bytes()
		}
		scan.varint()
		scan.varint()
		vals = scan.skipHeader()
	}
	vals += scan.skipHeader() // the trailer
	if scan.err != nil || !head && vals == 0 {
		return // truncated (the decode proper says so), or no strings
	}
	r.n = len(r.b)
	r.s = string(r.b[:len(r.b)-len(scan.b)])
	if vals > 0 {
		r.vals = make([]string, vals)
	}
}

func (r *reader) header() http.Header {
	n := r.uvarint()
	if r.err != nil || n == 0 {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errShort
		return nil
	}
	h := make(http.Header, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		k := r.string()
		nv := r.uvarint()
		if nv > uint64(len(r.b)) {
			r.err = errShort
			return nil
		}
		var vs []string
		if uint64(len(r.vals)) >= nv {
			vs, r.vals = r.vals[:0:nv], r.vals[nv:]
		} else {
			vs = make([]string, 0, nv)
		}
		for j := uint64(0); j < nv && r.err == nil; j++ {
			vs = append(vs, r.string())
		}
		h[k] = vs
	}
	return h
}

// DecodeShared is Decode with f.Body a slice of b rather than a copy: b
// must stay untouched while f.Body is in use.
func (f *Frame) DecodeShared(b []byte) error {
	*f = Frame{}
	return f.decodeInto(b, nil, true)
}

func (f *Frame) decode(b []byte) error {
	body := f.Body[:0]
	*f = Frame{}
	return f.decodeInto(b, body, false)
}

func (f *Frame) decodeInto(b, body []byte, shared bool) error {
	r := reader{b: b}
	f.Flags = uint16(r.uvarint())
	r.share(f.Flags&FlagHead != 0)
	if f.Flags&FlagHead != 0 {
		f.Target = r.uvarint()
		f.Method = r.string()
		f.Host = r.string()
		f.URI = r.string()
		f.Proto = r.string()
		f.RemoteAddr = r.string()
		f.ContentLength = r.varint()
		f.Status = int(r.varint())
		f.Header = r.header()
	}
	f.Trailer = r.header()
	if shared {
		v := r.bytes()
		f.Body = v[:len(v):len(v)]
	} else {
		f.Body = append(body, r.bytes()...)
	}
	if f.Flags&FlagError != 0 {
		f.Error = r.string()
		f.Limit = r.varint()
	}
	return r.err
}
