package mapping

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"
)

// ConditionCostLimit bounds the work of one evaluation of a rule's
// condition, in CEL cost units (about one per value visited or compared):
// a membership test over a hundred roles costs a few hundred, a hostile
// expression (nested comprehensions over a long claim list) is cut off
// after this and does not hold.
const ConditionCostLimit = 10_000

// maxConditionBytes bounds a condition's text.
const maxConditionBytes = 4 << 10

// condition is a compiled CEL condition.
type condition struct {
	prg cel.Program
	// roots are the top-level claims it reads; all: it may read any.
	roots []string
	all   bool
}

var (
	celEnvOnce sync.Once
	celEnv     *cel.Env
	celEnvErr  error
)

// env is the CEL environment of conditions: the variables of an Input and
// the standard functions and macros, nothing more.
func env() (*cel.Env, error) {
	celEnvOnce.Do(func() {
		celEnv, celEnvErr = cel.NewEnv(
			cel.Variable("claims", cel.MapType(cel.StringType, cel.DynType)),
			cel.Variable("issuer", cel.StringType),
			cel.Variable("audiences", cel.ListType(cel.StringType)),
			cel.Variable("client", cel.StringType),
			cel.Variable("scopes", cel.ListType(cel.StringType)),
			cel.ParserExpressionSizeLimit(maxConditionBytes),
			cel.ParserRecursionLimit(100),
		)
	})
	return celEnv, celEnvErr
}

// conditions caches compiled conditions by their text, so that Rules stays
// a plain value: the rules of a configuration compile once, when they are
// validated, and every evaluation finds them here. The cache is bounded;
// a condition dropped from it is compiled again when next evaluated.
var conditions = struct {
	sync.Mutex
	m map[string]*condition
}{m: map[string]*condition{}}

const maxCachedConditions = 1024

// CompileCondition compiles and type-checks a CEL condition: it must be
// a bool expression over claims, issuer, audiences, client and scopes. The
// error gives the position in the expression (line:column).
func CompileCondition(expr string) error {
	_, err := compiled(expr)
	return err
}

func compiled(expr string) (*condition, error) {
	conditions.Lock()
	c := conditions.m[expr]
	conditions.Unlock()
	if c != nil {
		return c, nil
	}
	c, err := compile(expr)
	if err != nil {
		return nil, err
	}
	conditions.Lock()
	if len(conditions.m) >= maxCachedConditions {
		for k := range conditions.m { // drop one at random
			delete(conditions.m, k)
			break
		}
	}
	conditions.m[expr] = c
	conditions.Unlock()
	return c, nil
}

func compile(expr string) (*condition, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, errors.New("empty condition")
	}
	if len(expr) > maxConditionBytes {
		return nil, fmt.Errorf("condition is over %d bytes", maxConditionBytes)
	}
	e, err := env()
	if err != nil {
		return nil, err
	}
	checked, iss := e.Compile(expr)
	if iss != nil && iss.Err() != nil {
		// One line, each error at its line:column (from 1), as a
		// configuration check lists problems.
		var msgs []string
		for _, e := range iss.Errors() {
			msgs = append(msgs, fmt.Sprintf("at %d:%d: %s", e.Location.Line(), e.Location.Column()+1, e.Message))
		}
		return nil, errors.New("condition " + strings.Join(msgs, "; "))
	}
	if !checked.OutputType().IsExactType(cel.BoolType) {
		hint := ""
		if checked.OutputType().IsExactType(cel.DynType) {
			hint = " (a claim's type is known only at run time: compare it, as in claims.x == true)"
		}
		return nil, fmt.Errorf("condition is of type %s, want bool%s", checked.OutputType(), hint)
	}
	prg, err := e.Program(checked, cel.CostLimit(ConditionCostLimit))
	if err != nil {
		return nil, err
	}
	c := &condition{prg: prg}
	c.roots, c.all = claimRoots(checked.NativeRep())
	return c, nil
}

// claimRoots lists the top-level claims an expression reads: claims.x,
// claims["x"], has(claims.x), "x" in claims. Any other use of claims
// (iterating it, size(claims), an index that is not a constant) may read
// any claim: all.
func claimRoots(a *ast.AST) (roots []string, all bool) {
	seen := map[string]bool{}
	for _, id := range ast.MatchDescendants(ast.NavigateAST(a), ast.KindMatcher(ast.IdentKind)) {
		if id.AsIdent() != "claims" {
			continue
		}
		name, ok := "", false
		if p, has := id.Parent(); has {
			switch p.Kind() {
			case ast.SelectKind:
				name, ok = p.AsSelect().FieldName(), true
			case ast.CallKind:
				c := p.AsCall()
				args := c.Args()
				switch {
				case c.FunctionName() == operators.Index && len(args) == 2 && args[0].ID() == id.ID():
					name, ok = stringLiteral(args[1])
				case c.FunctionName() == operators.In && len(args) == 2 && args[1].ID() == id.ID():
					name, ok = stringLiteral(args[0])
				}
			}
		}
		if !ok {
			return nil, true
		}
		if !seen[name] {
			seen[name] = true
			roots = append(roots, name)
		}
	}
	return roots, false
}

func stringLiteral(e ast.Expr) (string, bool) {
	if e.Kind() != ast.LiteralKind {
		return "", false
	}
	s, ok := e.AsLiteral().(types.String)
	return string(s), ok
}

// eval evaluates the condition for in: whether it holds, and why not (an
// evaluation error, such as a missing claim or the cost limit, means it
// does not hold).
func (c *condition) eval(in Input) (bool, string) {
	out, _, err := c.prg.Eval(&activation{in: &in})
	if err != nil {
		return false, err.Error()
	}
	if b, ok := out.(types.Bool); ok {
		if b {
			return true, ""
		}
		return false, "false"
	}
	return false, fmt.Sprintf("result is %s, not bool", out.Type())
}

// activation gives a condition the variables of an Input, each made when
// the expression first reads it.
type activation struct {
	in *Input
}

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "claims":
		return claimsValue(*a.in), true
	case "issuer":
		return types.String(a.in.Issuer), true
	case "audiences":
		return stringList(a.in.Audiences), true
	case "client":
		return types.String(a.in.Client), true
	case "scopes":
		return stringList(a.in.Scopes), true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

func stringList(s []string) ref.Val {
	if s == nil {
		s = []string{}
	}
	return types.NewStringList(claimAdapter{}, s)
}

// claimsValue is in's claims as CEL sees them: the raw claims, or the
// normalised ones (each a list of strings) when there are none.
func claimsValue(in Input) ref.Val {
	if in.Raw != nil {
		return types.NewStringInterfaceMap(claimAdapter{}, in.Raw)
	}
	m := make(map[string]any, len(in.Claims))
	for k, v := range in.Claims {
		m[k] = v
	}
	return types.NewStringInterfaceMap(claimAdapter{}, m)
}

// claimAdapter turns decoded JSON into CEL values lazily, as the
// expression reaches them: a json.Number becomes an int when it is one
// (a uint above the int range, a double otherwise).
type claimAdapter struct{}

func (claimAdapter) NativeToValue(v any) ref.Val {
	switch x := v.(type) {
	case json.Number:
		return numberValue(string(x))
	case map[string]any:
		return types.NewStringInterfaceMap(claimAdapter{}, x)
	case []any:
		return types.NewDynamicList(claimAdapter{}, x)
	case []string:
		return types.NewStringList(claimAdapter{}, x)
	case nil:
		return types.NullValue
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return types.Int(int64(x))
		}
		return types.Double(x)
	}
	return types.DefaultTypeAdapter.NativeToValue(v)
}

func numberValue(s string) ref.Val {
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return types.Int(i)
	}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return types.Uint(u)
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return types.String(s)
	}
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return types.Int(int64(f))
	}
	return types.Double(f)
}

// ClaimRoots lists, sorted, the top-level claims the rules can read (the
// first member of each claim path, the claims each condition names), so
// that a record of a client need keep only those for the rules to be
// evaluated again. all: some condition may read any claim (it iterates
// claims, or indexes it with a computed name), so all must be kept. A
// condition that does not compile reads nothing.
func (rs Rules) ClaimRoots() (roots []string, all bool) {
	seen := map[string]bool{}
	add := func(name string) {
		if !seen[name] {
			seen[name] = true
			roots = append(roots, name)
		}
	}
	for _, r := range rs {
		for k := range r.Claims {
			if p, err := ParsePath(k); err == nil {
				add(p.Root())
			}
		}
		if r.Condition == "" {
			continue
		}
		c, err := compiled(r.Condition)
		if err != nil {
			continue
		}
		if c.all {
			all = true
		}
		for _, name := range c.roots {
			add(name)
		}
	}
	if all {
		return nil, true
	}
	sort.Strings(roots)
	return roots, false
}
