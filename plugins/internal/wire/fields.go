package wire

import "encoding/binary"

// The fields Frame is encoded with (uvarints, varints, length-prefixed
// bytes), for other data-plane messages: the Core calls a plugin makes.

// AppendBytes appends v with its length, as Fields.Bytes reads it.
func AppendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// AppendString appends s with its length, as Fields.String reads it.
func AppendString(b []byte, s string) []byte { return appendString(b, s) }

// Fields reads a message's fields in the order they were appended. A field
// that is missing or truncated reads as zero and sets Err; the fields
// after it read as zero too.
type Fields struct{ r reader }

// NewFields reads b.
func NewFields(b []byte) Fields { return Fields{reader{b: b}} }

// Uvarint reads what binary.AppendUvarint appended.
func (f *Fields) Uvarint() uint64 { return f.r.uvarint() }

// Varint reads what binary.AppendVarint appended.
func (f *Fields) Varint() int64 { return f.r.varint() }

// Bytes reads what AppendBytes appended: a slice of the message, not a
// copy, with no room to append into what follows it; empty is nil.
func (f *Fields) Bytes() []byte {
	v := f.r.bytes()
	if len(v) == 0 {
		return nil
	}
	return v[:len(v):len(v)]
}

// String reads what AppendString appended.
func (f *Fields) String() string { return f.r.string() }

// Err is the first field that could not be read (errShort), or nil.
func (f *Fields) Err() error { return f.r.err }
