package proxy

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// sink is the Directus side of a filtered connection: it keeps what the
// filter sends.
type sink struct{ bytes.Buffer }

func (s *sink) Close() error { return nil }

// frame builds one client frame: fin, opcode, masked under key.
func frame(fin bool, opcode byte, payload []byte, key []byte) []byte {
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	var hdr []byte
	switch n := len(payload); {
	case n < 126:
		hdr = []byte{b0, byte(n)}
	case n <= 0xffff:
		hdr = []byte{b0, 126, 0, 0}
		binary.BigEndian.PutUint16(hdr[2:], uint16(n))
	default:
		hdr = make([]byte, 10)
		hdr[0], hdr[1] = b0, 127
		binary.BigEndian.PutUint64(hdr[2:], uint64(n))
	}
	if key == nil {
		return append(hdr, payload...)
	}
	hdr[1] |= 0x80
	out := append(hdr, key...)
	for i, c := range payload {
		out = append(out, c^key[i%4])
	}
	return out
}

// swapAll swaps every trusted subject for "dbr_" + it.
func swapAll(subject string) (string, bool) {
	if !strings.HasPrefix(subject, "idp-") {
		return "", false
	}
	return "dbr_" + subject, true
}

// TestFrameFilterModel drives the filter with random frames (auth messages
// of both protocols with trusted and other tokens, other text, binary,
// control, fragmented, oversized, unmasked frames) written in random
// chunks, and checks that Directus receives exactly the frames expected:
// auth messages with a trusted token re-framed with the swapped token,
// every other byte as the client wrote it.
func TestFrameFilterModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		out := &sink{}
		f := newFrameFilter(out, swapAll)
		var in, want bytes.Buffer
		n := rapid.IntRange(1, 12).Draw(t, "frames")
		for i := range n {
			key := rapid.SliceOfN(rapid.Byte(), 4, 4).Draw(t, "key")
			tok := rapid.SampledFrom([]string{"idp-a.b.c", "idp-" + strings.Repeat("x", 300) + ".b.c", "other", ""}).Draw(t, "token")
			switch kind := rapid.IntRange(0, 8).Draw(t, "kind"); kind {
			case 8: // the member name spelled with JSON escapes
				js, _ := json.Marshal(tok)
				msg := []byte(`{"type":"auth","access\u005ftoken":` + string(js) + `}`)
				in.Write(frame(true, 1, msg, key))
				if swapped, ok := swapAll(tok); ok {
					b, _ := json.Marshal(map[string]any{"type": "auth", "access_token": swapped})
					want.Write(frame(true, 1, b, key))
				} else {
					want.Write(frame(true, 1, msg, key))
				}
			case 0, 1: // auth message (realtime or GraphQL)
				var msg []byte
				if kind == 0 {
					msg, _ = json.Marshal(map[string]any{"type": "auth", "access_token": tok, "uid": i})
				} else {
					msg, _ = json.Marshal(map[string]any{"type": "connection_init", "payload": map[string]any{"access_token": tok}})
				}
				in.Write(frame(true, 1, msg, key))
				if swapped, ok := swapAll(tok); ok {
					var m map[string]json.RawMessage
					_ = json.Unmarshal(msg, &m)
					js, _ := json.Marshal(swapped)
					if kind == 0 {
						m["access_token"] = js
					} else {
						m["payload"], _ = json.Marshal(map[string]json.RawMessage{"access_token": js})
					}
					b, _ := json.Marshal(m)
					want.Write(frame(true, 1, b, key))
				} else {
					want.Write(frame(true, 1, msg, key))
				}
			case 2: // an auth message split over two frames: not read
				msg, _ := json.Marshal(map[string]any{"type": "auth", "access_token": tok})
				a := frame(false, 1, msg[:len(msg)/2], key)
				b := frame(true, 0, msg[len(msg)/2:], key)
				in.Write(a)
				in.Write(b)
				want.Write(a)
				want.Write(b)
			case 3: // binary with an auth message inside: Directus reads it as text
				msg, _ := json.Marshal(map[string]any{"type": "auth", "access_token": tok})
				in.Write(frame(true, 2, msg, key))
				if swapped, ok := swapAll(tok); ok {
					b, _ := json.Marshal(map[string]any{"type": "auth", "access_token": swapped})
					want.Write(frame(true, 2, b, key))
				} else {
					want.Write(frame(true, 2, msg, key))
				}
			case 4: // control frames
				b := frame(true, byte(rapid.SampledFrom([]int{8, 9, 10}).Draw(t, "op")), rapid.SliceOfN(rapid.Byte(), 0, 20).Draw(t, "ctl"), key)
				in.Write(b)
				want.Write(b)
			case 5: // a text frame over the inspection limit (auth inside)
				msg, _ := json.Marshal(map[string]any{"type": "auth", "access_token": tok, "pad": strings.Repeat("p", maxInspected)})
				b := frame(true, 1, msg, key)
				in.Write(b)
				want.Write(b)
			case 6: // unmasked (a protocol error Directus answers): passed on
				msg, _ := json.Marshal(map[string]any{"type": "auth", "access_token": tok})
				b := frame(true, 1, msg, nil)
				in.Write(b)
				want.Write(b)
			case 7: // ordinary text messages, small and medium
				msg, _ := json.Marshal(map[string]any{"type": "subscribe", "collection": strings.Repeat("c", rapid.IntRange(0, 70000).Draw(t, "size"))})
				b := frame(true, 1, msg, key)
				in.Write(b)
				want.Write(b)
			}
		}
		data := in.Bytes()
		for len(data) > 0 {
			k := rapid.IntRange(1, max(1, len(data))).Draw(t, "chunk")
			if k > len(data) {
				k = len(data)
			}
			if n, err := f.Write(data[:k]); err != nil || n != k {
				t.Fatalf("Write = %d, %v; want %d", n, err, k)
			}
			data = data[k:]
		}
		if !bytes.Equal(out.Bytes(), want.Bytes()) {
			t.Fatalf("Directus got %d bytes, want %d:\n got %q\nwant %q", out.Len(), want.Len(), clip(out.Bytes()), clip(want.Bytes()))
		}
	})
}

func clip(b []byte) []byte {
	if len(b) > 400 {
		return b[:400]
	}
	return b
}

// FuzzFrameFilterIdentity: with nothing to swap, the filter is the
// identity on any bytes in any chunks, and never panics.
func FuzzFrameFilterIdentity(f *testing.F) {
	f.Add(frame(true, 1, []byte(`{"type":"auth","access_token":"idp-a.b.c"}`), []byte{1, 2, 3, 4}), uint8(3))
	f.Add([]byte{0x81, 0xff, 0, 0, 0, 0, 0, 0, 0, 9}, uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		out := &sink{}
		flt := newFrameFilter(out, func(string) (string, bool) { return "", false })
		c := int(chunk) + 1
		for rest := data; len(rest) > 0; {
			k := min(c, len(rest))
			if _, err := flt.Write(rest[:k]); err != nil {
				t.Fatal(err)
			}
			rest = rest[k:]
		}
		// Bytes of a frame read whole are sent once it is complete: what
		// is still held is the unfinished tail.
		if got := append(out.Bytes(), flt.buf...); !bytes.Equal(got, data) {
			t.Fatalf("got %q, want %q", clip(got), clip(data))
		}
	})
}

var _ io.ReadWriteCloser = (*frameFilter)(nil)

func (s *sink) Read(p []byte) (int, error) { return 0, io.EOF }
