package engine

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/gob"
	"encoding/hex"
	"os"
	"sync"

	"github.com/kvmnet/kvmnet/internal/model"
)

// The parsed desired state is kept in the store next to its document, so
// that a process that has just started (the CLI without a daemon) does not
// parse the document again: with 10,000 forwards, parsing takes about
// 150 ms, decoding the kept form 5 ms. The kept form is only trusted by the
// very program that wrote it (its Go build ID), since another version may
// parse, default and check differently.

// parsedForm is what is kept of a parsed config: what it says. Its
// positions are read from the document when a message needs them
// (model.Config.SetDoc).
type parsedForm struct {
	Networks []model.Network
	VMs      []model.VM
}

// programStamp names this program's build, or "" when it cannot be known
// (nothing is then kept).
var programStamp = sync.OnceValue(func() string {
	// /proc/self/exe still opens once the file was replaced (an upgrade
	// under a running daemon); its path then no longer does.
	f, err := elf.Open("/proc/self/exe")
	if err != nil {
		exe, err := os.Executable()
		if err != nil {
			return ""
		}
		if f, err = elf.Open(exe); err != nil {
			return ""
		}
	}
	defer f.Close()
	// The Go linker writes the build ID, a hash of everything that went
	// into the binary, in this note.
	s := f.Section(".note.go.buildid")
	if s == nil {
		return ""
	}
	data, err := s.Data()
	if err != nil || len(data) == 0 {
		return ""
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
})

// keepParsed remembers cfg, stored as revision rev, in memory and in the
// store. Failing to keep it costs a parse later, so it is only logged.
func (e *Engine) keepParsed(cfg *model.Config, rev uint64) {
	e.remember(cfg, rev)
	e.storeParsed(cfg, rev)
}

// storeParsed keeps cfg in the store as the parsed form of revision rev
// (the store ignores it when rev is no longer the newest).
func (e *Engine) storeParsed(cfg *model.Config, rev uint64) {
	stamp, blob := e.encodeParsed(cfg)
	if stamp == "" {
		return
	}
	if err := e.Store.SaveParsed(rev, stamp, blob); err != nil {
		e.Log.Warn("keeping the parsed desired state failed", "err", err)
	}
}

// keepLater keeps cfg, stored as revision rev, in the store from a
// goroutine; when edits come faster than that, only the newest is kept.
func (e *Engine) keepLater(cfg *model.Config, rev uint64) {
	e.laterMu.Lock()
	defer e.laterMu.Unlock()
	e.later, e.laterRev = cfg, rev
	if e.laterRunning {
		return
	}
	e.laterRunning = true
	e.laterDone.Add(1)
	go func() {
		defer e.laterDone.Done()
		for {
			e.laterMu.Lock()
			cfg, rev := e.later, e.laterRev
			e.later = nil
			if cfg == nil {
				e.laterRunning = false
				e.laterMu.Unlock()
				return
			}
			e.laterMu.Unlock()
			e.storeParsed(cfg, rev)
		}
	}()
}

// Wait waits for what the engine does in the background (see
// KeepInBackground); call it before closing the store.
func (e *Engine) Wait() { e.laterDone.Wait() }

// remember keeps cfg as the parsed form of revision rev in memory.
func (e *Engine) remember(cfg *model.Config, rev uint64) {
	e.cacheMu.Lock()
	e.cached, e.cachedRev = cfg, rev
	e.cacheMu.Unlock()
}

// encodeParsed returns the kept form of cfg and the stamp of the program
// that wrote it, or "" and nil when it cannot be kept (which only costs a
// parse later, so it is only logged).
func (e *Engine) encodeParsed(cfg *model.Config) (stamp string, blob []byte) {
	stamp = programStamp()
	if stamp == "" {
		return "", nil
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(parsedForm{Networks: cfg.Networks, VMs: cfg.VMs}); err != nil {
		e.Log.Warn("encoding the parsed desired state failed", "err", err)
		return "", nil
	}
	return stamp, buf.Bytes()
}

// desiredForEdit is Desired for an edit: the config kept in memory, else
// the one kept in the store, else the document parsed (and kept).
func (e *Engine) desiredForEdit() (*model.Config, uint64, error) {
	doc, rev, err := e.Store.Desired()
	if err != nil || rev == 0 {
		return e.Desired()
	}
	e.cacheMu.Lock()
	cfg, cachedRev := e.cached, e.cachedRev
	e.cacheMu.Unlock()
	if cfg != nil && cachedRev == rev {
		return cfg, rev, nil
	}
	if cfg, err := e.keptParsed(doc, rev); err != nil || cfg != nil {
		return cfg, rev, err
	}
	cfg, rev, err = e.Desired()
	if err == nil && rev > 0 {
		e.keepParsed(cfg, rev)
	}
	return cfg, rev, err
}

// keptParsed returns the config the store keeps for revision rev, whose
// document is doc, or nil.
func (e *Engine) keptParsed(doc []byte, rev uint64) (*model.Config, error) {
	stamp := programStamp()
	if stamp == "" {
		return nil, nil
	}
	blob, err := e.Store.Parsed(rev, stamp)
	if err != nil || blob == nil {
		return nil, err
	}
	var form parsedForm
	if err := gob.NewDecoder(bytes.NewReader(blob)).Decode(&form); err != nil {
		e.Log.Warn("decoding the parsed desired state failed; parsing the document", "err", err)
		return nil, nil
	}
	revs, err := e.Store.Revisions()
	if err != nil {
		return nil, err
	}
	name := "desired state"
	for _, r := range revs {
		if r.Rev == rev && r.Note != "" {
			name = r.Note
		}
	}
	cfg := &model.Config{Networks: form.Networks, VMs: form.VMs}
	cfg.SetDoc(name, doc)
	e.remember(cfg, rev)
	return cfg, nil
}

// Keep records that cfg is the parsed form of doc, when doc is the stored
// desired state (an Apply just saved it), so that the next edit neither
// parses it nor, in a new process, has to.
func (e *Engine) Keep(cfg *model.Config, doc []byte) {
	stored, rev, err := e.Store.Desired()
	if err != nil || rev == 0 || !bytes.Equal(stored, doc) {
		return
	}
	e.keepParsed(cfg, rev)
}
