package model

import (
	"strings"
	"sync"
)

// Positions records where each setting of a config was written: the line and
// column of its value (of its first key, for a mapping) and the text the user
// wrote. Parse fills it; Config.Errorf reads it.
//
// A config that did not come straight out of Parse has positions of two
// other kinds. An edit (Config.WithForward) lays the arguments it was given
// over the positions of the config it edits, so that problems with them
// name the argument ("--port") instead of a line. A config stored as a new
// document (Config.SetDoc) reads its positions from that document the first
// time a message needs one.
type Positions struct {
	m map[string]position
	// base answers for the paths m does not have: the positions of the
	// config an edit started from.
	base *Positions
	// edit names the edit whose arguments the positions in m stand for
	// (see Edit.Name).
	edit string
	// load, when set, fills m on first use (see Config.SetDoc); once
	// guards it.
	load func() map[string]position
	once sync.Once
}

// position of one path. null marks a key written without a value
// ("tap:"), which Parse treats like a key that is not there.
type position struct {
	line, col int
	text      string
	null      bool
	// byEdit marks a setting an edit gave rather than a file (line is 0);
	// arg names the argument that gave it, e.g. "--port" ("" for the
	// edit as a whole).
	byEdit bool
	arg    string
}

// Equal reports true: positions say where a setting was written, not what it
// means, so two Configs that say the same thing are equal wherever they came
// from. go-cmp uses this method.
func (p *Positions) Equal(*Positions) bool { return true }

// Lookup returns the line and column where path (e.g. "networks[0].subnet")
// was written, and whether the file has it.
func (p *Positions) Lookup(path string) (line, column int, ok bool) {
	pos, ok := p.get(path)
	return pos.line, pos.col, ok
}

// get returns the position recorded for path, looking through to base.
func (p *Positions) get(path string) (position, bool) {
	for ; p != nil; p = p.base {
		if p.load != nil {
			p.once.Do(func() { p.m = p.load() })
		}
		if pos, ok := p.m[path]; ok {
			return pos, true
		}
	}
	return position{}, false
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
		if pos, ok := p.get(path); ok && (pos.line > 0 || pos.byEdit) {
			return pos, true
		}
		if path == "" {
			return position{line: 1, col: 1}, true
		}
		path = parentPath(path)
	}
}

// editName is the name of the edit whose arguments p records, or "".
func (p *Positions) editName() string {
	for ; p != nil; p = p.base {
		if p.edit != "" {
			return p.edit
		}
	}
	return ""
}

// has reports whether the file sets path to a value (not null).
func (p *Positions) has(path string) bool {
	pos, ok := p.get(path)
	return ok && !pos.null
}

// text returns what the user wrote at path, or def when the file does not
// have it.
func (p *Positions) text(path, def string) string {
	if pos, ok := p.get(path); ok && !pos.null {
		return pos.text
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
