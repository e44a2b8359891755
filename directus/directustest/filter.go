package directustest

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// fieldKind is how a filterable field compares.
type fieldKind int

const (
	kindString fieldKind = iota
	kindInt
	// kindConcealed is a field like directus_users.token: Directus refuses
	// filters on its value and accepts only (non-)null and (non-)empty.
	kindConcealed
)

// record reads a field of a row: nil for null, else a string or an int64.
type record func(field string) any

type predicate func(record) bool

// compileFilter parses a filter in Directus's JSON syntax ({"_and":[...]},
// {"_or":[...]}, {field:{op:value}}) over the given fields. Comparisons with
// a null field are false, as in SQL, except _null and _empty.
func compileFilter(raw string, fields map[string]fieldKind) (predicate, *apiError) {
	if raw == "" {
		return func(record) bool { return true }, nil
	}
	var node json.RawMessage
	if err := json.Unmarshal([]byte(raw), &node); err != nil {
		return nil, invalidQuery("fake: filter is not JSON")
	}
	p, err := compileNode(node, fields)
	if err != nil {
		return nil, invalidQuery(err.Error())
	}
	return p, nil
}

func compileNode(raw json.RawMessage, fields map[string]fieldKind) (predicate, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("fake: filter node is not an object")
	}
	var all []predicate
	for key, v := range obj {
		switch key {
		case "_and", "_or":
			var nodes []json.RawMessage
			if err := json.Unmarshal(v, &nodes); err != nil {
				return nil, fmt.Errorf("fake: %s wants a list", key)
			}
			var subs []predicate
			for _, n := range nodes {
				p, err := compileNode(n, fields)
				if err != nil {
					return nil, err
				}
				subs = append(subs, p)
			}
			if key == "_and" {
				all = append(all, and(subs))
			} else {
				all = append(all, or(subs))
			}
		default:
			kind, ok := fields[key]
			if !ok {
				return nil, fmt.Errorf("fake: unsupported filter field %q", key)
			}
			var ops map[string]json.RawMessage
			if err := json.Unmarshal(v, &ops); err != nil {
				return nil, fmt.Errorf("fake: filter on %q wants {operator: value}", key)
			}
			for op, val := range ops {
				p, err := compileOp(key, kind, op, val)
				if err != nil {
					return nil, err
				}
				all = append(all, p)
			}
		}
	}
	return and(all), nil
}

func and(ps []predicate) predicate {
	return func(r record) bool {
		for _, p := range ps {
			if !p(r) {
				return false
			}
		}
		return true
	}
}

func or(ps []predicate) predicate {
	return func(r record) bool {
		for _, p := range ps {
			if p(r) {
				return true
			}
		}
		return len(ps) == 0
	}
}

func compileOp(field string, kind fieldKind, op string, raw json.RawMessage) (predicate, error) {
	switch op {
	case "_null", "_nnull", "_empty", "_nempty":
		var on bool
		if err := json.Unmarshal(raw, &on); err != nil || !on {
			return nil, fmt.Errorf("fake: %s wants true", op)
		}
		empty := op == "_empty" || op == "_nempty"
		want := op == "_null" || op == "_empty"
		return func(r record) bool {
			v := r(field)
			isNull := v == nil || (empty && v == "")
			return isNull == want
		}, nil
	}
	if kind == kindConcealed {
		return nil, fmt.Errorf("Field with \"conceal\" special does not allow the %q filter operator", op)
	}
	switch op {
	case "_eq", "_neq", "_gt", "_gte", "_lt", "_lte":
		want, err := value(kind, raw)
		if err != nil {
			return nil, fmt.Errorf("fake: %s on %q: %v", op, field, err)
		}
		return func(r record) bool {
			v := r(field)
			if v == nil {
				return false
			}
			c := compare(v, want)
			switch op {
			case "_eq":
				return c == 0
			case "_neq":
				return c != 0
			case "_gt":
				return c > 0
			case "_gte":
				return c >= 0
			case "_lt":
				return c < 0
			default:
				return c <= 0
			}
		}, nil
	case "_in", "_nin":
		var raws []json.RawMessage
		if err := json.Unmarshal(raw, &raws); err != nil {
			return nil, fmt.Errorf("fake: %s wants a list", op)
		}
		var set []any
		for _, x := range raws {
			v, err := value(kind, x)
			if err != nil {
				return nil, fmt.Errorf("fake: %s on %q: %v", op, field, err)
			}
			set = append(set, v)
		}
		in := op == "_in"
		return func(r record) bool {
			v := r(field)
			if v == nil {
				return false
			}
			for _, x := range set {
				if compare(v, x) == 0 {
					return in
				}
			}
			return !in
		}, nil
	}
	return nil, fmt.Errorf("fake: unsupported filter operator %q", op)
}

// value decodes a filter operand for a field of kind.
func value(kind fieldKind, raw json.RawMessage) (any, error) {
	if kind == kindInt {
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			var s string
			if json.Unmarshal(raw, &s) != nil {
				return nil, fmt.Errorf("want a number")
			}
			n = json.Number(s)
		}
		i, err := strconv.ParseInt(n.String(), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("invalid numeric value")
		}
		return i, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("want a string")
	}
	return s, nil
}

func compare(a, b any) int {
	switch x := a.(type) {
	case int64:
		y, _ := b.(int64)
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	case string:
		y, _ := b.(string)
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	}
	return 1
}
