package kit

import (
	"crypto/sha256"
	"encoding/json"
	"sync"
)

// Memo remembers, per object, what a controller last wrote and the
// resourceVersion its cache showed before that write. Until the cache
// moves past that version, a reconcile that computes the same content again
// is looking at its own write not yet seen, not at drift: writing again
// would be a pointless request (at fleet scale, one per affected object per
// event). Once the cache shows any newer version, ours or someone's edit,
// the normal comparison decides.
//
// Entries are grouped by owner (the object whose reconcile wrote them), so
// everything an owner's writes left behind goes with it. The zero Memo is
// ready to use.
type Memo struct {
	mu sync.Mutex
	m  map[string]map[string]memoEntry
}

type memoEntry struct {
	sum    [sha256.Size]byte
	seenRV string
}

func contentSum(v any) ([sha256.Size]byte, bool) {
	data, err := json.Marshal(v)
	if err != nil {
		return [sha256.Size]byte{}, false
	}
	return sha256.Sum256(data), true
}

// Pending reports whether content was already written as owner's key over
// the version the cache still shows (cachedRV).
func (w *Memo) Pending(owner, key, cachedRV string, content any) bool {
	sum, ok := contentSum(content)
	if !ok {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	e, found := w.m[owner][key]
	return found && e.sum == sum && e.seenRV == cachedRV
}

// Wrote records that content was written as owner's key over cachedRV.
func (w *Memo) Wrote(owner, key, cachedRV string, content any) {
	sum, ok := contentSum(content)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]map[string]memoEntry{}
	}
	if w.m[owner] == nil {
		w.m[owner] = map[string]memoEntry{}
	}
	w.m[owner][key] = memoEntry{sum: sum, seenRV: cachedRV}
}

// Forget drops one of owner's keys.
func (w *Memo) Forget(owner, key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m[owner], key)
}

// ForgetOwner drops everything remembered for an owner that is gone.
func (w *Memo) ForgetOwner(owner string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m, owner)
}
