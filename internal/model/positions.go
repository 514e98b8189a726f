package model

import "strings"

// Positions records where each setting of a config was written: the line and
// column of its value (of its first key, for a mapping) and the text the user
// wrote. Parse fills it; Config.Errorf reads it.
type Positions struct {
	m map[string]position
}

// position of one path. null marks a key written without a value
// ("tap:"), which Parse treats like a key that is not there.
type position struct {
	line, col int
	text      string
	null      bool
}

// Equal reports true: positions say where a setting was written, not what it
// means, so two Configs that say the same thing are equal wherever they came
// from. go-cmp uses this method.
func (p *Positions) Equal(*Positions) bool { return true }

// Lookup returns the line and column where path (e.g. "networks[0].subnet")
// was written, and whether the file has it.
func (p *Positions) Lookup(path string) (line, column int, ok bool) {
	if p == nil {
		return 0, 0, false
	}
	pos, ok := p.m[path]
	return pos.line, pos.col, ok
}

func (p *Positions) set(path string, pos position) {
	if p.m == nil {
		p.m = map[string]position{}
	}
	p.m[path] = pos
}

// find returns the position of path, or of the nearest enclosing path the
// file has: "networks[1].dhcp.range" falls back to "networks[1].dhcp", then
// "networks[1]", "networks", and the start of the file.
func (p *Positions) find(path string) (position, bool) {
	if p == nil {
		return position{}, false
	}
	for {
		if pos, ok := p.m[path]; ok && pos.line > 0 {
			return pos, true
		}
		if path == "" {
			return position{line: 1, col: 1}, true
		}
		path = parentPath(path)
	}
}

// has reports whether the file sets path to a value (not null).
func (p *Positions) has(path string) bool {
	if p == nil {
		return false
	}
	pos, ok := p.m[path]
	return ok && !pos.null
}

// text returns what the user wrote at path, or def when the file does not
// have it.
func (p *Positions) text(path, def string) string {
	if p != nil {
		if pos, ok := p.m[path]; ok && !pos.null {
			return pos.text
		}
	}
	return def
}

// line returns the line of path, or 0.
func (p *Positions) line(path string) int {
	pos, _ := p.find(path)
	return pos.line
}

// parentPath cuts the last step off a path: "a[1].b" → "a[1]" → "a" → "".
func parentPath(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}
