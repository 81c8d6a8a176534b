package plugins

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/paster-dev/paster/plugins/internal/wire"
	"github.com/paster-dev/paster/runner"
)

// On the data plane a Core call and its reply are encoded in wire's
// fields, every field in a fixed order, instead of the JSON the gRPC path
// (plugins from before the data plane) keeps: a WaitForSignal is a few
// dozen bytes each way, with about a tenth of JSON's allocations, and
// encoding it takes little of the stack of the handler that parks in it.

// appendTo appends c's data-plane encoding to b.
func (c *coreCall) appendTo(b []byte) []byte {
	b = binary.AppendUvarint(b, c.Scope)
	b = wire.AppendString(b, c.Name)
	b = wire.AppendBytes(b, c.Value)
	b = binary.AppendVarint(b, int64(c.Timeout))
	b = binary.AppendVarint(b, int64(c.Min))
	b = wire.AppendString(b, c.From)
	return binary.AppendUvarint(b, c.Sub)
}

// decode reads what appendTo wrote; Value is a slice of b.
func (c *coreCall) decode(b []byte) error {
	f := wire.NewFields(b)
	*c = coreCall{
		Scope:   f.Uvarint(),
		Name:    f.String(),
		Value:   f.Bytes(),
		Timeout: time.Duration(f.Varint()),
		Min:     int(f.Varint()),
		From:    f.String(),
		Sub:     f.Uvarint(),
	}
	if err := f.Err(); err != nil {
		return fmt.Errorf("core call: %w", err)
	}
	return nil
}

// appendTo appends r's data-plane encoding to b: value, n, the messages
// (count, then sequence number, time and data of each), then the error, if
// any, as its text, a bit mask of its coreKinds, and a *GapError's fields.
func (r *coreReply) appendTo(b []byte) []byte {
	b = wire.AppendBytes(b, r.Value)
	b = binary.AppendUvarint(b, r.N)
	b = binary.AppendUvarint(b, uint64(len(r.Messages)))
	for _, m := range r.Messages {
		b = binary.AppendUvarint(b, m.Seq)
		t, err := m.Time.MarshalBinary()
		if err != nil { // a time beyond what MarshalBinary takes: none
			t = nil
		}
		b = wire.AppendBytes(b, t)
		b = wire.AppendBytes(b, m.Data)
	}
	e := r.Err
	if e == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = wire.AppendString(b, e.Msg)
	var mask uint64
	for i, k := range coreKinds {
		for _, name := range e.Kinds {
			if name == k.name {
				mask |= 1 << i
			}
		}
	}
	b = binary.AppendUvarint(b, mask)
	if e.Gap == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = wire.AppendString(b, e.Gap.Topic)
	b = binary.AppendUvarint(b, e.Gap.Want)
	return binary.AppendUvarint(b, e.Gap.First)
}

// decode reads what appendTo wrote; Value and the messages' Data are
// slices of b.
func (r *coreReply) decode(b []byte) error {
	f := wire.NewFields(b)
	*r = coreReply{Value: f.Bytes(), N: f.Uvarint()}
	n := f.Uvarint()
	if n > uint64(len(b)) {
		return fmt.Errorf("core reply: %d messages in %d bytes", n, len(b))
	}
	for i := uint64(0); i < n && f.Err() == nil; i++ {
		m := runner.Message{Seq: f.Uvarint()}
		if t := f.Bytes(); t != nil {
			if err := m.Time.UnmarshalBinary(t); err != nil {
				return fmt.Errorf("core reply: message %d: %w", m.Seq, err)
			}
		}
		m.Data = f.Bytes()
		r.Messages = append(r.Messages, m)
	}
	if f.Uvarint() == 1 {
		e := &coreErr{Msg: f.String()}
		mask := f.Uvarint()
		for i, k := range coreKinds {
			if mask&(1<<i) != 0 {
				e.Kinds = append(e.Kinds, k.name)
			}
		}
		if f.Uvarint() == 1 {
			e.Gap = &runner.GapError{Topic: f.String(), Want: f.Uvarint(), First: f.Uvarint()}
		}
		r.Err = e
	}
	if err := f.Err(); err != nil {
		return fmt.Errorf("core reply: %w", err)
	}
	return nil
}
