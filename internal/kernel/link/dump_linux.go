package link

import (
	"errors"

	"github.com/vishvananda/netlink/nl"
)

// maxDumpTries bounds the retries of a netlink dump that the kernel
// interrupted because the table changed under it (NLM_F_DUMP_INTR, which
// the library returns as ErrDumpInterrupted with partial results): on a
// busy hypervisor links and routes change all the time. CNI's
// pkg/netlinksafe retries the same way.
const maxDumpTries = 5

// dump runs the netlink dump f until it is not interrupted, at most
// maxDumpTries times; every dump of this package goes through it.
func dump[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range maxDumpTries {
		v, err = f()
		if !errors.Is(err, nl.ErrDumpInterrupted) {
			break
		}
	}
	return v, err
}
