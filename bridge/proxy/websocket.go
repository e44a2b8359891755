package proxy

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
)

// maxInspected bounds the client messages the websocket filter reads: an
// auth message is a few hundred bytes, a token a few KiB. Larger frames,
// fragmented messages and control frames pass unread.
const maxInspected = 64 << 10

// frameFilter is the upgraded connection to Directus, seen through the
// client's side of the websocket (RFC 6455 §5): frames the client writes
// are parsed as they stream by, and a complete, unfragmented, masked text
// or binary frame (Directus reads both as text) that is an auth message with an IdP token (Directus realtime:
// {"type":"auth","access_token":...}; GraphQL over websocket:
// {"type":"connection_init","payload":{"access_token":...}}) is sent on
// with the machine user's static token in its place, re-framed. Every
// other byte is passed as it came; what Directus sends back is not
// touched.
type frameFilter struct {
	conn io.ReadWriteCloser
	// swap returns the token to send in place of subject, and whether
	// subject is the bridge's to swap at all.
	swap func(subject string) (string, bool)
	buf  []byte // an incomplete frame header, or a frame being read whole
	need int    // len of the whole frame in buf being read; 0: reading a header
	pass uint64 // payload bytes still to pass as they come
}

func newFrameFilter(conn io.ReadWriteCloser, swap func(string) (string, bool)) *frameFilter {
	return &frameFilter{conn: conn, swap: swap}
}

func (f *frameFilter) Read(p []byte) (int, error) { return f.conn.Read(p) }
func (f *frameFilter) Close() error               { return f.conn.Close() }

// Write takes the client's bytes, in any chunks.
func (f *frameFilter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		switch {
		case f.pass > 0:
			k := len(p)
			if uint64(k) > f.pass {
				k = int(f.pass)
			}
			if _, err := f.conn.Write(p[:k]); err != nil {
				return 0, err
			}
			f.pass -= uint64(k)
			p = p[k:]
		case f.need > 0:
			k := min(f.need-len(f.buf), len(p))
			f.buf = append(f.buf, p[:k]...)
			p = p[k:]
			if len(f.buf) == f.need {
				if _, err := f.conn.Write(f.inspect(f.buf)); err != nil {
					return 0, err
				}
				f.buf, f.need = f.buf[:0], 0
			}
		default:
			// The header: its second byte tells its length (2 to 14).
			for len(p) > 0 && len(f.buf) < headerLen(f.buf) {
				f.buf = append(f.buf, p[0])
				p = p[1:]
			}
			hl := headerLen(f.buf)
			if len(f.buf) < hl {
				continue // p is used up
			}
			size := payloadLen(f.buf)
			b0, b1 := f.buf[0], f.buf[1]
			data := b0 == 0x81 || b0 == 0x82 // FIN, no RSV bits, opcode text or binary
			masked := b1&0x80 != 0
			if data && masked && size <= maxInspected {
				f.need = hl + int(size)
				if f.need == len(f.buf) { // an empty text frame
					if _, err := f.conn.Write(f.buf); err != nil {
						return 0, err
					}
					f.buf, f.need = f.buf[:0], 0
				}
				continue
			}
			if _, err := f.conn.Write(f.buf); err != nil {
				return 0, err
			}
			f.buf, f.pass = f.buf[:0], size
		}
	}
	return n, nil
}

// headerLen is the length of the frame header starting b: 2 until the
// second byte is known.
func headerLen(b []byte) int {
	if len(b) < 2 {
		return 2
	}
	n := 2
	switch b[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b[1]&0x80 != 0 {
		n += 4
	}
	return n
}

// payloadLen reads the payload length of a complete header.
func payloadLen(b []byte) uint64 {
	switch l := b[1] & 0x7f; l {
	case 126:
		return uint64(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		return binary.BigEndian.Uint64(b[2:10])
	default:
		return uint64(l)
	}
}

// inspect returns the frame to send for the complete masked data frame
// frame: frame itself, or a new frame of its opcode with the auth
// message's token swapped.
func (f *frameFilter) inspect(frame []byte) []byte {
	hl := headerLen(frame)
	key := frame[hl-4 : hl]
	msg := make([]byte, len(frame)-hl)
	for i := range msg {
		msg[i] = frame[hl+i] ^ key[i%4]
	}
	// A member name may be spelled with JSON escapes ("access\u005ftoken").
	if !bytes.Contains(msg, []byte("access_token")) && !bytes.Contains(msg, []byte(`\u`)) {
		return frame
	}
	out, ok := f.swapMessage(msg)
	if !ok {
		return frame
	}
	return maskedFrame(frame[0], out, key)
}

// swapMessage returns msg with its IdP token swapped, when it is an auth
// message holding one.
func (f *frameFilter) swapMessage(msg []byte) ([]byte, bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(msg, &m) != nil {
		return nil, false
	}
	var typ string
	if json.Unmarshal(m["type"], &typ) != nil {
		return nil, false
	}
	switch typ {
	case "auth":
		tok, ok := f.swapIn(m)
		if !ok {
			return nil, false
		}
		m["access_token"] = tok
	case "connection_init":
		var payload map[string]json.RawMessage
		if json.Unmarshal(m["payload"], &payload) != nil {
			return nil, false
		}
		tok, ok := f.swapIn(payload)
		if !ok {
			return nil, false
		}
		payload["access_token"] = tok
		b, err := json.Marshal(payload)
		if err != nil {
			return nil, false
		}
		m["payload"] = b
	default:
		return nil, false
	}
	out, err := json.Marshal(m)
	return out, err == nil
}

// swapIn returns the JSON string to put in place of m's access_token.
func (f *frameFilter) swapIn(m map[string]json.RawMessage) (json.RawMessage, bool) {
	var subject string
	if json.Unmarshal(m["access_token"], &subject) != nil || subject == "" {
		return nil, false
	}
	tok, ok := f.swap(subject)
	if !ok {
		return nil, false
	}
	b, err := json.Marshal(tok)
	return b, err == nil
}

// maskedFrame frames msg as one masked frame under key, its first byte
// (FIN and opcode) b0.
func maskedFrame(b0 byte, msg, key []byte) []byte {
	var hdr []byte
	switch n := len(msg); {
	case n < 126:
		hdr = []byte{b0, 0x80 | byte(n)}
	case n <= 0xffff:
		hdr = []byte{b0, 0x80 | 126, 0, 0}
		binary.BigEndian.PutUint16(hdr[2:], uint16(n))
	default:
		hdr = make([]byte, 10)
		hdr[0], hdr[1] = b0, 0x80|127
		binary.BigEndian.PutUint64(hdr[2:], uint64(n))
	}
	out := append(hdr, key...)
	for i, c := range msg {
		out = append(out, c^key[i%4])
	}
	return out
}
