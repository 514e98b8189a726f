package model

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// Error is one problem in a config file, at a position. Parse returns every
// problem it finds as *Error values joined with errors.Join, sorted by
// position; Errors takes them apart again.
type Error struct {
	// File is the file name as given to Parse or Load.
	File string
	// Line and Column count from 1; both are 0 when the position is not
	// known (a Config built in code).
	Line, Column int
	// Path names the setting, e.g. "networks[1].subnet"; empty for problems
	// of the file as a whole (syntax errors).
	Path string
	// Msg says what is wrong, quoting the user's input, what is allowed and
	// what to do.
	Msg string
}

// Error formats e as "FILE:LINE:COLUMN: PATH: MSG", leaving out the parts
// that are not known.
func (e *Error) Error() string {
	var b []byte
	if e.File != "" {
		b = append(b, e.File...)
	}
	if e.Line > 0 {
		if len(b) > 0 {
			b = append(b, ':')
		}
		b = strconv.AppendInt(b, int64(e.Line), 10)
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(e.Column), 10)
	}
	if len(b) > 0 {
		b = append(b, ": "...)
	}
	if e.Path != "" {
		b = append(b, e.Path...)
		b = append(b, ": "...)
	}
	b = append(b, e.Msg...)
	return string(b)
}

// Errors returns the *Error values inside err: err itself, or the members
// of an errors.Join (nested joins included), in order. Other errors are
// left out.
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *Error:
			out = append(out, e)
		case interface{ Unwrap() []error }:
			for _, x := range e.Unwrap() {
				walk(x)
			}
		default:
			var me *Error
			if errors.As(err, &me) {
				out = append(out, me)
			}
		}
	}
	walk(err)
	return out
}

// Errorf returns an error about the setting at path (e.g.
// "networks[1].egress"), positioned where the file wrote it. When the file
// does not have that key (a default was used), the position is that of the
// nearest enclosing setting that it has, e.g. the mapping of networks[1].
// Validation that needs the kernel (does the egress interface exist?) uses
// it to report like Parse does:
//
//	host.yaml:9:13: networks[1].egress: interface "eth9" does not exist (interfaces: eth0, lo)
//
// A setting an edit gave (Config.WithForward) is named by its argument
// instead: "kvmnet forward add: --port: ...".
func (c *Config) Errorf(path string, format string, args ...any) *Error {
	path = c.originPath(path)
	e := &Error{File: c.Source, Path: path, Msg: fmt.Sprintf(format, args...)}
	if p, ok := c.Positions.find(path); ok {
		e.Line, e.Column = p.line, p.col
		if p.byEdit {
			// An edit's argument: name it, not a place in a file
			// (kvmnet forward add: --port: ...).
			e.File, e.Path = c.Positions.editName(), p.arg
		}
	}
	return e
}

// joinSorted orders errs by position, keeping the order of errors at the
// same position, and joins them.
func joinSorted(errs []*Error) error {
	if len(errs) == 0 {
		return nil
	}
	slices.SortStableFunc(errs, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return errors.Join(out...)
}
