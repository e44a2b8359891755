package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var (
	fenceRE   = regexp.MustCompile("(?s)```.*?```")
	headingRE = regexp.MustCompile(`(?m)^#{1,6}\s+(.*)$`)
	linkRE    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	schemeRE  = regexp.MustCompile(`^[a-z]+:`)
	punctRE   = regexp.MustCompile(`[^\w\- ]`)
)

// anchors are the heading anchors of a Markdown file, as GitHub makes them.
func anchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out, seen := map[string]bool{}, map[string]int{}
	for _, m := range headingRE.FindAllStringSubmatch(fenceRE.ReplaceAllString(string(b), ""), -1) {
		a := strings.ReplaceAll(punctRE.ReplaceAllString(strings.ToLower(strings.TrimSpace(m[1])), ""), " ", "-")
		if n, dup := seen[a]; dup {
			seen[a] = n + 1
			a = a + "-" + strconv.Itoa(n+1)
		} else {
			seen[a] = 0
		}
		out[a] = true
	}
	return out
}

// TestDocsLinks: every relative link of the README and docs/ reaches a file
// and, with a #fragment, a heading of it; every page links back to the
// README, and the README links every page. Needs no stack.
func TestDocsLinks(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	pages, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if len(pages) == 0 {
		t.Fatal("no docs pages")
	}
	files := append([]string{filepath.Join(root, "README.md")}, pages...)
	cache := map[string]map[string]bool{}
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := fenceRE.ReplaceAllString(string(b), "")
		for _, m := range linkRE.FindAllStringSubmatch(s, -1) {
			link := m[1]
			if schemeRE.MatchString(link) {
				continue
			}
			n++
			path, frag, _ := strings.Cut(link, "#")
			target := f
			if path != "" {
				target = filepath.Clean(filepath.Join(filepath.Dir(f), path))
			}
			if _, err := os.Stat(target); err != nil {
				t.Errorf("%s: %s: no such file", rel(root, f), link)
				continue
			}
			if frag != "" && strings.HasSuffix(target, ".md") {
				if cache[target] == nil {
					cache[target] = anchors(t, target)
				}
				if !cache[target][frag] {
					t.Errorf("%s: %s: no heading #%s in %s", rel(root, f), link, frag, rel(root, target))
				}
			}
		}
		if strings.Contains(f, string(filepath.Separator)+"docs"+string(filepath.Separator)) && !strings.Contains(s, "](../README.md)") {
			t.Errorf("%s does not link back to the README", rel(root, f))
		}
	}
	readme, _ := os.ReadFile(files[0])
	for _, p := range pages {
		if !strings.Contains(string(readme), "docs/"+filepath.Base(p)) {
			t.Errorf("the README does not link %s", rel(root, p))
		}
	}
	if n < 50 {
		t.Fatalf("only %d relative links found: the checker no longer reads the docs", n)
	}
}

func rel(root, p string) string {
	r, err := filepath.Rel(root, p)
	if err != nil {
		return p
	}
	return r
}
