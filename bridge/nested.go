package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// errRepeatedMember is an object, at any depth, that repeats a member.
var errRepeatedMember = errors.New("an object repeats a member")

// nestedUnique refuses valid JSON b in which an object at any depth repeats
// a member name (as encoding/json decodes names: escapes resolved, invalid
// UTF-8 as U+FFFD). Claim paths and conditions read nested members, and
// encoding/json keeps the last of repeated ones where the issuer may read
// the first: refusing them leaves one reading of every token, as
// jsonObject.unique does for the top level. One pass over b; it allocates
// only for escaped names and objects of many members.
func nestedUnique(b []byte) error {
	_, err := uniqueValue(b, skipSpace(b, 0))
	return err
}

// uniqueValue checks the value at b[i:] and returns the index after it.
func uniqueValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return i, errMalformedObject
	}
	switch b[i] {
	case '{':
		var buf [16][]byte
		names := buf[:0]
		var seen map[string]bool
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == '}' {
			return i + 1, nil
		}
		for {
			end := stringEnd(b, i)
			if end < 0 {
				return i, errMalformedObject
			}
			name, ok := decodedName(b[i:end])
			if !ok {
				return i, errMalformedObject
			}
			switch {
			case seen != nil:
				if seen[string(name)] {
					return i, errRepeatedMember
				}
				seen[string(name)] = true
			default:
				for _, n := range names {
					if bytes.Equal(n, name) {
						return i, errRepeatedMember
					}
				}
				if len(names) == len(buf) {
					seen = make(map[string]bool, 4*len(names))
					for _, n := range names {
						seen[string(n)] = true
					}
					seen[string(name)] = true
				} else {
					names = append(names, name)
				}
			}
			i = skipSpace(b, end)
			if i >= len(b) || b[i] != ':' {
				return i, errMalformedObject
			}
			var err error
			if i, err = uniqueValue(b, skipSpace(b, i+1)); err != nil {
				return i, err
			}
			i = skipSpace(b, i)
			if i < len(b) && b[i] == ',' {
				i = skipSpace(b, i+1)
				continue
			}
			if i < len(b) && b[i] == '}' {
				return i + 1, nil
			}
			return i, errMalformedObject
		}
	case '[':
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == ']' {
			return i + 1, nil
		}
		for {
			var err error
			if i, err = uniqueValue(b, i); err != nil {
				return i, err
			}
			i = skipSpace(b, i)
			if i < len(b) && b[i] == ',' {
				i = skipSpace(b, i+1)
				continue
			}
			if i < len(b) && b[i] == ']' {
				return i + 1, nil
			}
			return i, errMalformedObject
		}
	case '"':
		end := stringEnd(b, i)
		if end < 0 {
			return i, errMalformedObject
		}
		return end, nil
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return i, nil
		}
		i++
	}
	return i, nil
}

// stringEnd returns the index after the JSON string starting at b[i], or
// -1 when there is none.
func stringEnd(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// decodedName decodes a quoted member name as encoding/json does.
func decodedName(quoted []byte) ([]byte, bool) {
	raw := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return raw, true
	}
	var s string
	if json.Unmarshal(quoted, &s) != nil {
		return nil, false
	}
	return []byte(s), true
}
