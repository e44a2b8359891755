package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/directus-bridge/directus-bridge/bridge"
)

// Problem is one thing wrong with a configuration file: where it is (its
// YAML path, lists numbered from 1, and its line when the key is in the
// file) and what is wrong.
type Problem struct {
	// Path is e.g. directus.timeout or rules[2].role; "" for the file as a
	// whole.
	Path string
	// Line is the line of the key (or of the nearest enclosing key that is
	// in the file), from 1; 0 when none is.
	Line int
	// Msg says what was expected and, for a value of the wrong type, the
	// value given (quoted, at most maxShown characters).
	Msg string
	// hides: a value that could not be decoded; the semantic checks of the
	// same place are not reported, they would only repeat it.
	hides bool
	// about are the list elements a problem between elements depends on
	// (a rule and the earlier one that shadows it): it is not reported
	// when a part of one could not be decoded.
	about []string
}

func (p Problem) Error() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Path != "" {
		b.WriteString(p.Path + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// ConfigError is every problem found in a configuration file.
type ConfigError struct {
	Problems []Problem
}

func (e *ConfigError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the problems, each an error.
func (e *ConfigError) Unwrap() []error {
	errs := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		errs[i] = p
	}
	return errs
}

// maxShown caps the characters of a value shown in a message.
const maxShown = 60

// maxNodes bounds the nodes the checker visits, aliases expanded, so that
// an alias bomb costs little.
const maxNodes = 100000

const configCheckUsage = `usage: directus-bridge config check [-config FILE]

Checks the configuration file offline and lists every problem found, each
with its YAML path, line, what was expected and the value given: unknown
keys, values of the wrong type, and every value, issuer and rule that the
bridge would refuse. Lists are numbered from 1 (rules[2] is the second rule).
It does not contact Directus or the IdPs; it reads the environment only to
see that the variables the file names are set.

"directus-bridge mappings check" adds what needs the live Directus: that
every role and policy the rules name exists, and that no rule grants a role
or policy with admin access without allow_admin: true (serve refuses such
rules at start too).

The file is -config, else $DIRECTUS_BRIDGE_CONFIG, else directus-bridge.yaml
in the working directory.

Exit status: 0 valid, 1 problems found (or the file cannot be read), 2 usage.

flags:
`

func configCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("config check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), configCheckUsage)
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "config check: unexpected arguments %q\n", fs.Args())
		fs.Usage()
		return 2
	}
	b, err := os.ReadFile(*path)
	if err != nil {
		fmt.Fprintf(stdout, "%s: cannot be read: %v\n", *path, err)
		return 1
	}
	if _, ps := checkConfig(b); len(ps) > 0 {
		report(stdout, *path, ps)
		fmt.Fprintln(stdout, "(checked offline; \"directus-bridge mappings check\" also checks the rules against Directus)")
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (checked offline: structure, values, issuers and rules; "+
		"run \"directus-bridge mappings check\" to check the rules against Directus)\n", *path)
	return 0
}

// report writes problems as "file: N problems" and one line each,
// "  file:LINE: path: message".
func report(w io.Writer, file string, ps []Problem) {
	noun := "problems"
	if len(ps) == 1 {
		noun = "problem"
	}
	note := ""
	if slices.ContainsFunc(ps, func(p Problem) bool { return strings.Contains(p.Path, "[") }) {
		note = " (lists are numbered from 1)"
	}
	fmt.Fprintf(w, "%s: %d %s%s\n", file, len(ps), noun, note)
	for _, p := range ps {
		at := file
		if p.Line > 0 {
			at += ":" + strconv.Itoa(p.Line)
		}
		if p.Path != "" {
			at += ": " + p.Path
		}
		fmt.Fprintf(w, "  %s: %s\n", at, p.Msg)
	}
}

// loadValid reads, decodes and validates the configuration; the error is a
// *ConfigError listing every problem when the file is readable.
func loadValid(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, ps := checkConfig(b)
	if len(ps) > 0 {
		return nil, &ConfigError{Problems: ps}
	}
	return c, nil
}

// loadOrReport loads and validates the configuration, or writes every
// problem to stderr. The problems at the paths unused (the environment
// variables of secrets a command does not use) do not count.
func loadOrReport(path string, stderr io.Writer, unused ...string) (*Config, bool) {
	cfg, err := loadValid(path)
	var ce *ConfigError
	if errors.As(err, &ce) && len(unused) > 0 {
		ce.Problems = slices.DeleteFunc(ce.Problems, func(p Problem) bool { return slices.Contains(unused, p.Path) })
		if len(ce.Problems) == 0 {
			b, rerr := os.ReadFile(path)
			if rerr != nil {
				fmt.Fprintf(stderr, "%s: %v\n", path, rerr)
				return nil, false
			}
			c, _ := checkConfig(b)
			return c, c != nil
		}
	}
	switch {
	case errors.As(err, &ce):
		report(stderr, path, ce.Problems)
		return nil, false
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return nil, false
	}
	return cfg, true
}

// checkConfig decodes what can be decoded of b and validates it: it returns
// the configuration (defaults applied; parts that could not be decoded left
// zero) and every problem, decoding and semantic, in the order of the file
// (those of keys not in the file last).
func checkConfig(b []byte) (*Config, []Problem) {
	c, ps := decodeConfig(b)
	if c == nil {
		return nil, ps
	}
	semantic := c.problems()
	for _, p := range semantic {
		if !hidden(p.Path, ps) && !slices.ContainsFunc(p.about, func(a string) bool { return touched(a, ps) }) {
			ps = append(ps, p)
		}
	}
	sort.SliceStable(ps, func(i, j int) bool { return lineKey(ps[i]) < lineKey(ps[j]) })
	return c, ps
}

func lineKey(p Problem) int {
	if p.Line == 0 {
		return int(^uint(0) >> 1)
	}
	return p.Line
}

// hidden reports whether a semantic problem at path only repeats a value
// that could not be decoded: at path or around it.
func hidden(path string, decoding []Problem) bool {
	for _, d := range decoding {
		if !d.hides {
			continue
		}
		if d.Path == "" || under(path, d.Path) {
			return true
		}
	}
	return false
}

// touched reports whether a value at or under path, or around it, could
// not be decoded.
func touched(path string, decoding []Problem) bool {
	for _, d := range decoding {
		if d.hides && (d.Path == "" || under(path, d.Path) || under(d.Path, path)) {
			return true
		}
	}
	return false
}

// under reports whether path is p or inside it.
func under(path, p string) bool {
	return path == p || strings.HasPrefix(path, p+".") || strings.HasPrefix(path, p+"[")
}

var yamlLineError = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlProblem turns an error of the yaml package into problems.
func yamlProblems(err error, prefix string) []Problem {
	var te *yaml.TypeError
	msgs := []string{err.Error()}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	var ps []Problem
	for _, m := range msgs {
		p := Problem{Msg: prefix + strings.TrimPrefix(m, "yaml: "), hides: true}
		if s := yamlLineError.FindStringSubmatch(m); s != nil {
			p.Line, _ = strconv.Atoi(s[1])
			p.Msg = prefix + s[2]
		}
		ps = append(ps, p)
	}
	return ps
}

// decodeConfig decodes b as far as it can: a file that is not YAML gives
// one problem and no configuration; otherwise every unknown key and value
// of the wrong type is a problem, and the rest is decoded, defaults applied.
func decodeConfig(b []byte) (*Config, []Problem) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlProblems(err, "not valid YAML: ")
	}
	ck := &checker{lines: map[string]int{}, active: map[*yaml.Node]bool{}}
	var more yaml.Node
	if err := dec.Decode(&more); err == nil {
		line := more.Line
		ck.add("", line, false, "the file holds more than one YAML document (separated by ---): the bridge reads only the first")
	} else if !errors.Is(err, io.EOF) {
		ck.problems = append(ck.problems, yamlProblems(err, "not valid YAML after the first document: ")...)
	}
	c := &Config{}
	if len(doc.Content) > 0 {
		if clean := ck.walk(doc.Content[0], reflect.TypeOf(c).Elem(), ""); clean != nil {
			if err := clean.Decode(c); err != nil {
				// The checker should have removed whatever does not decode;
				// should it miss something, it is still reported.
				ck.problems = append(ck.problems, yamlProblems(err, "")...)
			}
		}
	}
	c.setDefaults()
	c.lines = ck.lines
	return c, ck.problems
}

// checker walks a YAML tree against the Go type it decodes into.
type checker struct {
	problems []Problem
	lines    map[string]int // YAML path -> line of its key (or list element)
	visited  int
	active   map[*yaml.Node]bool // aliases being expanded
}

func (ck *checker) add(path string, line int, hides bool, format string, a ...any) {
	ck.problems = append(ck.problems, Problem{Path: path, Line: line, Msg: fmt.Sprintf(format, a...), hides: hides})
}

var (
	unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
	durationType    = reflect.TypeOf(bridge.Duration(0))
)

// walk checks n against t at path. It returns what is to be decoded there:
// a copy of n without unknown keys, duplicates and values of the wrong type
// (a list element that is null or of the wrong type becomes a zero value,
// so that the indices of the others stay), aliases expanded; nil to decode
// nothing.
func (ck *checker) walk(n *yaml.Node, t reflect.Type, path string) *yaml.Node {
	if !ck.enter(n, path) {
		return nil
	}
	if n.Kind == yaml.AliasNode {
		return ck.follow(n, path, func(a *yaml.Node) *yaml.Node { return ck.walk(a, t, path) })
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return n
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			ck.wrongType(n, t, path)
			return nil
		}
		return n
	}
	switch t.Kind() {
	case reflect.Pointer:
		return ck.walk(n, t.Elem(), path)
	case reflect.Interface:
		return ck.expand(n, path)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			ck.wrongType(n, t, path)
			return nil
		}
		fields := yamlFields(t)
		return ck.mapping(n, path, func(key *yaml.Node, kpath string) (reflect.Type, bool) {
			f, ok := fields[key.Value]
			if !ok {
				ck.unknownKey(key, kpath, t)
			}
			return f, ok
		})
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			ck.wrongType(n, t, path)
			return nil
		}
		return ck.mapping(n, path, func(key *yaml.Node, kpath string) (reflect.Type, bool) {
			if err := key.Decode(reflect.New(t.Key()).Interface()); err != nil {
				ck.add(kpath, key.Line, true, "want a key of %s, got %s", describe(t.Key()), shown(key))
				return nil, false
			}
			return t.Elem(), true
		})
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 || n.Kind != yaml.SequenceNode {
			ck.wrongType(n, t, path)
			return nil
		}
		out := *n
		out.Content = make([]*yaml.Node, len(n.Content))
		for i, e := range n.Content {
			epath := fmt.Sprintf("%s[%d]", path, i+1)
			ck.lines[epath] = e.Line
			if target(e).ShortTag() == "!!null" {
				ck.add(epath, e.Line, true, "empty list element: remove it or give it a value")
			} else {
				out.Content[i] = ck.walk(e, t.Elem(), epath)
			}
			if out.Content[i] == nil {
				// The yaml package drops a null element; a zero value keeps
				// the indices of the others.
				out.Content[i] = zeroNode(t.Elem())
			}
		}
		return &out
	case reflect.String, reflect.Bool, reflect.Float32, reflect.Float64,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		isInt := t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64
		if n.Kind != yaml.ScalarNode || (isInt && n.ShortTag() != "!!int") ||
			n.Decode(reflect.New(t).Interface()) != nil {
			ck.wrongType(n, t, path)
			return nil
		}
		return n
	}
	ck.add(path, n.Line, true, "cannot be decoded (%s)", t)
	return nil
}

// zeroNode decodes to the zero value of t.
func zeroNode(t reflect.Type) *yaml.Node {
	var n yaml.Node
	if err := n.Encode(reflect.Zero(t).Interface()); err != nil || n.Kind == yaml.DocumentNode {
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	return &n
}

// enter counts n against maxNodes; false once the file expands to more.
func (ck *checker) enter(n *yaml.Node, path string) bool {
	ck.visited++
	if ck.visited == maxNodes+1 {
		ck.add(path, n.Line, true, "the file expands (aliases followed) to more than %d values: not checked further", maxNodes)
	}
	return ck.visited <= maxNodes
}

// follow calls f with what alias n refers to, unless that contains n.
func (ck *checker) follow(n *yaml.Node, path string, f func(*yaml.Node) *yaml.Node) *yaml.Node {
	if n.Alias == nil || ck.active[n] {
		ck.add(path, n.Line, true, "the alias *%s refers to a value that contains it", capped(n.Value))
		return nil
	}
	ck.active[n] = true
	defer delete(ck.active, n)
	return f(n.Alias)
}

// target is what n is, aliases followed (a key or a merged map).
func target(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 8; i++ {
		n = n.Alias
	}
	return n
}

// expand copies n with its aliases expanded, for a value of any type.
func (ck *checker) expand(n *yaml.Node, path string) *yaml.Node {
	if !ck.enter(n, path) {
		return nil
	}
	switch n.Kind {
	case yaml.AliasNode:
		return ck.follow(n, path, func(a *yaml.Node) *yaml.Node { return ck.expand(a, path) })
	case yaml.ScalarNode:
		return n
	}
	out := *n
	out.Content = make([]*yaml.Node, len(n.Content))
	for i, e := range n.Content {
		if out.Content[i] = ck.expand(e, path); out.Content[i] == nil {
			return nil
		}
	}
	return &out
}

// mapping checks the pairs of a mapping node; field says what type the
// value of a key has, or false for a key that is not allowed (it reports
// why). Merge keys (<<) are applied here: keys written out win over merged
// ones; a key written twice is reported and its first value kept.
func (ck *checker) mapping(n *yaml.Node, path string, field func(key *yaml.Node, kpath string) (reflect.Type, bool)) *yaml.Node {
	type pair struct{ k, v *yaml.Node }
	var merged, own []pair
	var addPairs func(m *yaml.Node, into *[]pair, depth int)
	addPairs = func(m *yaml.Node, into *[]pair, depth int) {
		for i := 0; i+1 < len(m.Content); i += 2 {
			// A merged pair counts against maxNodes: merges of merges
			// expand like aliases do.
			if depth > 0 && !ck.enter(m.Content[i], path) {
				return
			}
			k, v := target(m.Content[i]), m.Content[i+1]
			if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
				v := target(v)
				if depth >= 8 || !ck.enter(v, path) {
					ck.add(path, v.Line, true, "<< merges nested too deep")
					continue
				}
				switch v.Kind {
				case yaml.MappingNode:
					addPairs(v, &merged, depth+1)
				case yaml.SequenceNode:
					for _, e := range v.Content {
						if !ck.enter(e, path) {
							return
						}
						if e := target(e); e.Kind == yaml.MappingNode {
							addPairs(e, &merged, depth+1)
						} else {
							ck.add(path, e.Line, true, "<< merges maps only, got %s", shown(e))
						}
					}
				default:
					ck.add(path, v.Line, true, "<< merges maps only, got %s", shown(v))
				}
				continue
			}
			*into = append(*into, pair{k, v})
		}
	}
	addPairs(n, &own, 0)
	out := *n
	out.Content = nil
	seen := map[string]int{}
	ownKeys := map[string]bool{}
	for _, p := range own {
		if p.k.Kind == yaml.ScalarNode {
			ownKeys[p.k.Value] = true
		}
	}
	for _, set := range []struct {
		pairs  []pair
		merged bool
	}{{own, false}, {merged, true}} {
		for _, p := range set.pairs {
			if p.k.Kind != yaml.ScalarNode {
				ck.add(path, p.k.Line, false, "a key must be a name, got %s", shown(p.k))
				continue
			}
			kpath := p.k.Value
			if path != "" {
				kpath = path + "." + p.k.Value
			}
			if set.merged && ownKeys[p.k.Value] {
				continue
			}
			if first, dup := seen[p.k.Value]; dup {
				if !set.merged {
					ck.add(kpath, p.k.Line, false, "given twice (first at line %d, which is used)", first)
				}
				continue
			}
			seen[p.k.Value] = p.k.Line
			t, ok := field(p.k, kpath)
			if !ok {
				continue
			}
			ck.lines[kpath] = p.k.Line
			if v := ck.walk(p.v, t, kpath); v != nil {
				k := *p.k
				k.Tag = "!!str"
				out.Content = append(out.Content, &k, v)
			}
		}
	}
	return &out
}

// yamlFields maps the YAML keys of struct type t to their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for _, f := range reflect.VisibleFields(t) {
		if name := yamlName(f); name != "" {
			m[name] = f.Type
		}
	}
	return m
}

func yamlName(f reflect.StructField) string {
	if !f.IsExported() || f.Anonymous {
		return ""
	}
	name := strings.Split(f.Tag.Get("yaml"), ",")[0]
	if name == "-" {
		return ""
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name
}

// allowedKeys lists t's YAML keys in the order of its fields, without the
// deprecated ones.
func allowedKeys(t reflect.Type) []string {
	var keys []string
	for _, f := range reflect.VisibleFields(t) {
		if name := yamlName(f); name != "" && f.Tag.Get("deprecated") == "" {
			keys = append(keys, name)
		}
	}
	return keys
}

func (ck *checker) unknownKey(key *yaml.Node, path string, t reflect.Type) {
	allowed := allowedKeys(t)
	msg := "unknown key"
	if s := suggest(key.Value, allowed); s != "" {
		msg += "; did you mean " + s + "?"
	}
	ck.add(path, key.Line, false, "%s (allowed here: %s)", msg, strings.Join(allowed, ", "))
}

// suggest returns the allowed key closest to key, if one is close: the
// same but for case or - for _, or at most 2 edits away (1 for short keys).
func suggest(key string, allowed []string) string {
	norm := strings.ReplaceAll(strings.ToLower(key), "-", "_")
	best, bestD := "", 3
	if len(norm) <= 4 {
		bestD = 2
	}
	for _, a := range allowed {
		if a == norm {
			return a
		}
		if d := editDistance(norm, a); d < bestD {
			best, bestD = a, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, by bytes
// (keys are ASCII), with keys over 64 bytes taken as far from anything.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 10
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (ck *checker) wrongType(n *yaml.Node, t reflect.Type, path string) {
	msg := "want " + describe(t) + ", got " + shown(n)
	if (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && n.Kind == yaml.ScalarNode {
		msg += " (write a list: [a, b], or one \"- item\" a line)"
	}
	ck.add(path, n.Line, true, "%s", msg)
}

// describe says what a value of type t is written as.
func describe(t reflect.Type) string {
	if t == durationType {
		return "a duration such as 10s or 1m30s"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return describe(t.Elem())
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer of 0 or more"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		if e := t.Elem(); e.Kind() == reflect.String {
			return "a list of strings"
		}
		return "a list"
	case reflect.Map:
		return "a map"
	case reflect.Struct:
		return "a map (keys: " + strings.Join(allowedKeys(t), ", ") + ")"
	}
	return t.String()
}

// shown describes the value of n for a message: a scalar quoted and capped
// at maxShown characters, a list or map by its kind.
func shown(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a map"
	case yaml.AliasNode:
		return "an alias"
	}
	return strconv.Quote(capped(n.Value))
}

func capped(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if utf8.RuneCountInString(s) <= maxShown {
		return s
	}
	r := []rune(s)
	return string(r[:maxShown]) + "…"
}
