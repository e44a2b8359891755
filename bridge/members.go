package bridge

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"unicode/utf16"
	"unicode/utf8"
)

// The member checks of a JWT's header and payload run before the issuer is
// known, on bytes any caller chooses, so their work MUST stay linear in the
// input: one scan for the members, a randomly seeded hash set of the names
// (no input collides on purpose) and a fold of each name against the
// registered ones. The issue of record: a 63 KB body of 4,700 members cost
// 160 ms of pairwise comparisons.

var (
	errNotObject       = errors.New("not a JSON object")
	errMalformedObject = errors.New("malformed JSON object")
)

// jsonObject is the top-level members of a JSON object, as offsets into its
// bytes: no pointers, so that thousands of members cost the garbage
// collector nothing.
type jsonObject struct {
	b       []byte
	arena   []byte // the names that needed decoding
	members []member
}

// member locates one name and its value. A name without escapes or invalid
// UTF-8 is its bytes in b, as written; the others are decoded into arena.
type member struct {
	name, value span
	decoded     bool // name is in arena
}

type span struct{ start, end int32 }

func (o *jsonObject) name(i int) []byte {
	m := o.members[i]
	if m.decoded {
		return o.arena[m.name.start:m.name.end]
	}
	return o.b[m.name.start:m.name.end]
}

func (o *jsonObject) value(i int) []byte {
	m := o.members[i]
	return o.b[m.value.start:m.value.end]
}

// scan reads the members of the JSON object b: names decoded as
// encoding/json decodes them (escapes resolved, an invalid UTF-8 byte or an
// unpaired surrogate as U+FFFD), so that two spellings of one name compare
// equal, and values as written (see memberScanner).
func (o *jsonObject) scan(b []byte) error {
	*o = jsonObject{b: b, members: o.members[:0]}
	s := memberScanner{b: b}
	for {
		m, ok, err := s.next()
		if err != nil || !ok {
			return err
		}
		if !m.plain {
			n := len(o.arena)
			if o.arena, ok = unquoteName(o.arena, b[m.name.start:m.name.end]); !ok {
				return errMalformedObject
			}
			m.name, m.decoded = span{int32(n), int32(len(o.arena))}, true
		}
		o.members = append(o.members, m.member)
	}
}

// memberScanner reads the top-level members of a JSON object one at a
// time. It tracks strings and nesting without validating (json.Valid or
// json.Unmarshal do that): for valid JSON it reads what encoding/json
// reads (FuzzUniqueMembers), for invalid JSON something, in time linear in
// len(b). Bytes after the object are not read. A raw control character in
// a string is malformed (so is UTF-16); errNotObject is a b whose first
// value is not an object.
type memberScanner struct {
	b                         []byte
	i, depth                  int
	started, done, expectName bool
	open                      bool // a member's value is being read
	cur                       scannedMember
}

// scannedMember is a member as written; plain is false when its name holds
// an escape or a byte outside ASCII (it must be decoded to compare).
type scannedMember struct {
	member
	plain bool
}

// next returns the next member, or ok false after the last.
func (s *memberScanner) next() (m scannedMember, ok bool, err error) {
	b := s.b
	if s.done {
		return m, false, nil
	}
	if !s.started {
		if len(b) > 1<<30 {
			return m, false, errMalformedObject // offsets are int32
		}
		s.started, s.i = true, skipSpace(b, 0)
		if s.i == len(b) || b[s.i] != '{' {
			return m, false, errNotObject
		}
	}
	i, depth := s.i, s.depth
	for ; i < len(b); i++ {
		switch c := b[i]; c {
		case '"':
			start, plain := i+1, true
			for i++; i < len(b) && b[i] != '"'; i++ {
				switch c := b[i]; {
				case c == '\\':
					plain = false
					i++
				case c < ' ':
					return m, false, errMalformedObject
				case c >= utf8.RuneSelf:
					plain = false
				}
			}
			if i >= len(b) {
				break
			}
			if depth == 1 && s.expectName {
				s.cur = scannedMember{member: member{name: span{int32(start), int32(i)}}, plain: plain}
				s.expectName = false
			}
		case ':':
			if depth == 1 && !s.open {
				s.cur.value.start = int32(skipSpace(b, i+1))
				s.open = true
			}
		case '{', '[':
			depth++
			s.expectName = depth == 1 && c == '{'
		case '}', ']':
			depth--
			if depth == 0 {
				s.done = true // bytes after the object are not read
				if s.open {
					return s.end(i), true, nil
				}
				return m, false, nil
			}
		case ',':
			if depth == 1 {
				s.expectName = true
				if s.open {
					s.i, s.depth = i+1, depth
					return s.end(i), true, nil
				}
			}
		}
	}
	return m, false, errMalformedObject
}

// end closes the current member, whose value ends before b[i].
func (s *memberScanner) end(i int) scannedMember {
	j := i
	for j > int(s.cur.value.start) && isSpace(s.b[j-1]) {
		j--
	}
	s.cur.value.end = int32(j)
	s.open = false
	return s.cur
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// unique refuses an object that repeats a member or spells a registered
// name in another case ("EXP", "Aud", "ſub"). RFC 7519 §4 lets a parser
// take the last of repeated claims, and encoding/json (the bridge's and
// go-jose's) does so and also matches struct fields case-insensitively;
// the issuer or a proxy may read the first. Refusing both leaves one
// reading of every token. registered MUST be lower-case ASCII.
func (o *jsonObject) unique(registered []string) error {
	var folded [maxRegisteredLen]byte
	for i := range o.members {
		name := o.name(i)
		if f, ok := foldASCII(folded[:0], name); ok {
			for _, r := range registered {
				if string(f) == r && string(name) != r {
					return fmt.Errorf("member %q is not %q", name, r)
				}
			}
		}
	}
	if i, ok := o.firstRepeat(); ok {
		return fmt.Errorf("member %q is repeated", o.name(i))
	}
	return nil
}

// maxRegisteredLen bounds the registered names: _claim_sources is 14.
const maxRegisteredLen = 16

// nameSeed seeds the hash set of firstRepeat, once per process: a caller
// cannot choose names that collide.
var nameSeed = maphash.MakeSeed()

// firstRepeat returns the index of a name that equals an earlier one, in
// time linear in the total length of the names: pairwise for a few, else
// an open-addressing hash set of indexes, at most half full.
func (o *jsonObject) firstRepeat() (int, bool) {
	n := len(o.members)
	if n <= 16 {
		for i := range n {
			for j := range i {
				if bytes.Equal(o.name(i), o.name(j)) {
					return i, true
				}
			}
		}
		return 0, false
	}
	size := 1
	for size < 2*n {
		size <<= 1
	}
	slots := make([]int32, size) // index+1 into members; 0 is free
	mask := uint64(size - 1)
	for i := range n {
		name := o.name(i)
		for j := maphash.Bytes(nameSeed, name) & mask; ; j = (j + 1) & mask {
			s := slots[j]
			if s == 0 {
				slots[j] = int32(i + 1)
				break
			}
			if bytes.Equal(o.name(int(s-1)), name) {
				return i, true
			}
		}
	}
	return 0, false
}

// unquoteName appends the JSON string body s (without its quotes) to dst,
// decoded exactly as encoding/json's unquoteBytes does: the same escapes,
// an unpaired surrogate and each invalid UTF-8 byte as U+FFFD. ok is false
// where encoding/json refuses the string.
func unquoteName(dst, s []byte) (_ []byte, ok bool) {
	for r := 0; r < len(s); {
		switch c := s[r]; {
		case c == '\\':
			r++
			if r >= len(s) {
				return dst, false
			}
			switch s[r] {
			case '"', '\\', '/', '\'':
				dst = append(dst, s[r])
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				rr := hex4(s[r-1:])
				if rr < 0 {
					return dst, false
				}
				r += 5
				if utf16.IsSurrogate(rr) {
					if dec := utf16.DecodeRune(rr, hex4(s[r:])); dec != utf8.RuneError {
						r += 6
						dst = utf8.AppendRune(dst, dec)
						continue
					}
					rr = utf8.RuneError
				}
				dst = utf8.AppendRune(dst, rr)
				continue
			default:
				return dst, false
			}
			r++
		case c == '"', c < ' ':
			return dst, false
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			r++
		default:
			rr, size := utf8.DecodeRune(s[r:])
			r += size
			dst = utf8.AppendRune(dst, rr)
		}
	}
	return dst, true
}

// hex4 reads the rune of a \uXXXX escape at the start of s, or -1.
func hex4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// foldASCII appends to dst the lower-case ASCII spelling of name when every
// rune of name has one: ASCII itself, ſ (U+017F, folds to s) and K (U+212A,
// Kelvin, folds to k) are the only other runes whose case folding reaches
// ASCII (TestFoldASCII checks all of Unicode). For a registered name r, which
// is lower-case ASCII, strings.EqualFold(name, r) is then exactly
// string(folded) == r. ok is false when name has another rune or is longer
// than cap(dst).
func foldASCII(dst, name []byte) (_ []byte, ok bool) {
	for i := 0; i < len(name); {
		if len(dst) == cap(dst) {
			return dst, false
		}
		c := name[i]
		if c < utf8.RuneSelf {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, size := utf8.DecodeRune(name[i:])
		switch r {
		case 'ſ':
			dst = append(dst, 's')
		case '\u212a':
			dst = append(dst, 'k')
		default:
			return dst, false
		}
		i += size
	}
	return dst, true
}
