package vmtest

import (
	"fmt"
	"io"
)

// cpioWriter writes the "newc" cpio format, the only one the kernel unpacks
// as an initramfs. It is small enough to own, and saves a dependency on the
// cpio package.
type cpioWriter struct {
	w     io.Writer
	ino   uint32
	err   error
	wrote int64
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.wrote += int64(n)
	c.err = err
}

// pad aligns the stream to four bytes, as newc requires after every header
// and every file body.
func (c *cpioWriter) pad() {
	if r := c.wrote % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *cpioWriter) entry(name string, mode uint32, body []byte) {
	c.ino++
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, 1, 0, len(body), 0, 0, 0, 0, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad()
	c.write(body)
	c.pad()
}

// Dir adds a directory.
func (c *cpioWriter) Dir(name string) { c.entry(name, 0o040755, nil) }

// File adds a regular file with the given permission bits.
func (c *cpioWriter) File(name string, perm uint32, body []byte) {
	c.entry(name, 0o100000|perm, body)
}

// Symlink adds a symbolic link to target.
func (c *cpioWriter) Symlink(name, target string) { c.entry(name, 0o120777, []byte(target)) }

// Close writes the trailer that ends the archive.
func (c *cpioWriter) Close() error {
	c.entry("TRAILER!!!", 0, nil)
	return c.err
}
