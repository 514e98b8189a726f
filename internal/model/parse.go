package model

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// MaxFileSize is the largest file Parse reads. A host with ten thousand
// guest interfaces and ten thousand forwards is about 480 KB; parsing costs
// about 0.4 ms and 80 KB of memory per KB of YAML (measured: a 50 MB file
// took 28 s and 4.1 GB), so 8 MiB leaves room for sixteen such hosts and
// bounds what a hostile file can cost.
const MaxFileSize = 8 << 20

// Load reads and parses the config file at path. See Parse.
func Load(path string) (*Config, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// ReadFile reads the config file at path ("-" for standard input),
// refusing one larger than MaxFileSize without reading all of it.
func ReadFile(path string) ([]byte, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("reading config: %w", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading config %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, tooLarge(path)
	}
	return data, nil
}

func tooLarge(file string) error {
	return joinSorted([]*Error{{File: file, Msg: fmt.Sprintf("the file is larger than %d MiB, the most kvmnet reads (a host with ten thousand guests and ten thousand forwards needs about half a MiB); nothing was read or changed", MaxFileSize>>20)}})
}

// noNetworks is the message of a document that describes no networks.
const noNetworks = "the file describes no networks; applied, it would remove every network kvmnet manages, so it is refused (to remove everything, run kvmnet destroy)"

// IsNoNetworks reports whether err is Parse's refusal of a document that
// describes no networks (an empty file, only comments, only "---").
func IsNoNetworks(err error) bool {
	es := Errors(err)
	return len(es) == 1 && es[0].Msg == noNetworks
}

// ParseStored parses a desired state kvmnet stored itself: like Parse,
// except that an empty document (what destroy stores) is the empty Config.
func ParseStored(file string, data []byte) (*Config, error) {
	c, err := Parse(file, data)
	if IsNoNetworks(err) {
		return &Config{Source: file}, nil
	}
	return c, err
}

// Parse parses and validates a host.yaml whose content is data; file names it
// in messages. It is strict: unknown keys, values of the wrong kind and
// contradictions are errors. It returns every problem it finds as *Error
// values joined with errors.Join and sorted by position (see Errors); a
// syntax error stops it early. On success the Config has its defaults filled
// in (see the field comments) and its Positions set, for Config.Errorf.
//
// A file larger than MaxFileSize is refused before it is parsed. A file
// that describes no networks (empty, only comments, only "---") is refused
// too: applied, it would remove everything (see IsNoNetworks and
// ParseStored).
func Parse(file string, data []byte) (*Config, error) {
	if len(data) > MaxFileSize {
		return nil, tooLarge(file)
	}
	data = unixNewlines(data)
	tree, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, joinSorted([]*Error{syntaxError(file, data, err)})
	}
	d := newDecoder(file, tree)
	var body ast.Node
	for _, doc := range tree.Docs {
		switch {
		case doc == nil || doc.Body == nil:
		case doc.Body.Type() == ast.DirectiveType:
			// "%YAML 1.2" comes as a document of its own.
		case body != nil:
			line, col := nodePos(doc.Body)
			if doc.Start != nil {
				line, col = doc.Start.Position.Line, doc.Start.Position.Column
			}
			return nil, joinSorted([]*Error{{File: file, Line: line, Column: col,
				Msg: "a second YAML document; the file holds one (remove this '---' and what follows, or merge it into the first)"}})
		default:
			body = doc.Body
		}
	}
	c := d.config(body)
	errs := append(d.errs, check(c, d.bad, d.keyTrouble)...)
	if len(c.Networks) == 0 && len(errs) == 0 {
		e := &Error{File: file, Line: 1, Column: 1, Msg: noNetworks}
		if body != nil {
			e.Line, e.Column = nodePos(body)
		}
		if line, col, ok := d.pos.Lookup("networks"); ok {
			e.Path, e.Line, e.Column = "networks", line, col
		}
		errs = append(errs, e)
	}
	if len(errs) > 0 {
		return nil, joinSorted(errs)
	}
	return c, nil
}

// unixNewlines turns the line breaks YAML allows (\r\n, a lone \r) into
// \n. The parser miscounts lines after a comment ended by \r\n (a file
// written on Windows got positions one line too far per comment); with
// \n alone every line and column stays where the user's editor shows it.
func unixNewlines(data []byte) []byte {
	if bytes.IndexByte(data, '\r') < 0 {
		return data
	}
	data = bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(data, []byte("\r"), []byte("\n"))
}

// tabIndent finds a line indented with a tab, which YAML forbids.
var tabIndent = regexp.MustCompile(`(?m)^[ ]*\t`)

// syntaxError turns an error of the YAML parser into an *Error. Its messages
// are terse; the commonest mistakes get a hint.
func syntaxError(file string, data []byte, err error) *Error {
	e := &Error{File: file, Msg: "invalid YAML: " + err.Error()}
	var ye yaml.Error
	if !errors.As(err, &ye) {
		return e
	}
	msg := ye.GetMessage()
	if tk := ye.GetToken(); tk != nil && tk.Position != nil {
		e.Line, e.Column = tk.Position.Line, tk.Position.Column
	}
	switch {
	case strings.Contains(msg, "'\t'"):
		if loc := tabIndent.FindIndex(data); loc != nil {
			e.Line = 1 + strings.Count(string(data[:loc[0]]), "\n")
			e.Column = loc[1] - loc[0]
		}
		msg = "a tab is used for indentation; YAML indents with spaces only (replace the tab with spaces)"
	case strings.HasPrefix(msg, "mapping key ") && strings.Contains(msg, " already defined at "):
		// mapping key "a" already defined at [1:5]
		key, at, _ := strings.Cut(strings.TrimPrefix(msg, "mapping key "), " already defined at ")
		at = strings.Trim(at, "[]")
		line, _, _ := strings.Cut(at, ":")
		msg = fmt.Sprintf("key %s is given twice in this mapping (first on line %s); keep one", key, line)
	case strings.Contains(msg, "flow mapping end token"):
		msg = "invalid YAML: this '{' is not closed; end the mapping with '}' on the same entry"
	case strings.Contains(msg, "sequence end token"):
		msg = "invalid YAML: this '[' is not closed; end the list with ']'"
	case strings.Contains(msg, "not allowed in this context"):
		msg = "invalid YAML: " + msg + " (check the indentation of this line against the lines above, and that every \"key: value\" has a space after the colon)"
	default:
		msg = "invalid YAML: " + msg
	}
	e.Msg = msg
	return e
}
