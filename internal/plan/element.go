package plan

import "strings"

// Element is one element of a set or map, written as nft lists it: the
// fields of its key (several for a concatenation) joined with " . ", and in
// a map " : " and the fields of its value; strings unquoted, addresses,
// prefixes, ports and protocols as nft prints them. Its text is its
// identity (two elements are the same when their texts are), so sets are
// compared and sorted as strings; its fields are read only through Key
// and Value, and made only through NewElement and NewMapElement: the
// convention lives here and nowhere else.
type Element string

// The separators of nft's element syntax.
const (
	fieldSep = " . "
	valueSep = " : "
)

// NewElement is the element of a set whose key has fields key.
func NewElement(key ...string) Element { return Element(strings.Join(key, fieldSep)) }

// NewMapElement is the element of a map from key to value.
func NewMapElement(key []string, value ...string) Element {
	return Element(strings.Join(key, fieldSep) + valueSep + strings.Join(value, fieldSep))
}

// Key returns the fields of e's key.
func (e Element) Key() []string {
	k, _, _ := strings.Cut(string(e), valueSep)
	return strings.Split(k, fieldSep)
}

// Value returns the fields of a map element's value; nil for a set's.
func (e Element) Value() []string {
	_, v, ok := strings.Cut(string(e), valueSep)
	if !ok {
		return nil
	}
	return strings.Split(v, fieldSep)
}

// KeyText is e's key as one text (the fields joined), what a map is
// looked up by.
func (e Element) KeyText() string {
	k, _, _ := strings.Cut(string(e), valueSep)
	return k
}
