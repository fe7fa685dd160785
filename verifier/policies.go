package verifier

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/keylime-go/keylime/internal/httpx"
	"github.com/keylime-go/keylime/store"
)

// Named policies (runtime/IMA policies under /allowlists, measured-boot reference states under
// /mbpolicies) are stored once: the name points at a digest, the text is kept once per digest and
// compiled once in memory, shared by every agent that uses it.
//
//	policies
//	├── runtime
//	│   └── <name> : {"digest": …, "created": …}
//	├── mb
//	│   └── <name> : …
//	└── blobs
//	    └── <sha256 hex> : policy text
var bucketBlobs = store.Bucket{"policies", "blobs"}

// policyKind is "runtime" or "mb".
type policyKind string

const (
	kindRuntime policyKind = "runtime"
	kindMB      policyKind = "mb"
)

func (k policyKind) bucket() store.Bucket { return store.Bucket{"policies", string(k)} }

// field is the wire name of the kind's policy text.
func (k policyKind) field() string {
	if k == kindMB {
		return "mb_policy"
	}
	return "runtime_policy"
}

// compiledPolicy is a parsed policy shared read-only by every agent that uses it.
type compiledPolicy struct {
	Name   string
	Digest string
	// Value is the kind's parsed form (see Verifier.compile).
	Value any
}

type policyRef struct {
	Digest  string    `json:"digest"`
	Created time.Time `json:"created"`
}

// policySet is the in-memory index of one kind's named policies.
type policySet struct {
	mu     sync.RWMutex
	byName map[string]*compiledPolicy
	// byDigest lets two names with the same text share one compiled value.
	byDigest map[string]*compiledPolicy
}

func newPolicySet() *policySet {
	return &policySet{byName: map[string]*compiledPolicy{}, byDigest: map[string]*compiledPolicy{}}
}

func (s *policySet) get(name string) *compiledPolicy {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byName[name]
}

func (s *policySet) names() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.byName))
	for n := range s.byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// errPolicyExists and errPolicyMissing map to 409 and 404.
var (
	errPolicyExists  = errors.New("policy exists")
	errPolicyMissing = errors.New("policy not found")
	errPolicyInUse   = errors.New("policy in use")
)

func digestOf(raw []byte) string {
	h := sha256.Sum256(raw)
	return hex.EncodeToString(h[:])
}

// compile parses a policy text of kind once.
func (v *Verifier) compile(kind policyKind, raw []byte) (any, error) {
	c := v.compilers[kind]
	if c == nil {
		return nil, fmt.Errorf("no compiler for %s policies", kind)
	}
	return c(raw)
}

// loadPolicies reads every named policy and compiles each distinct text once.
func (v *Verifier) loadPolicies() error {
	for _, kind := range []policyKind{kindRuntime, kindMB} {
		set := newPolicySet()
		v.policies[kind] = set
		kvs, err := v.db.List(kind.bucket())
		if err != nil {
			return err
		}
		for _, kv := range kvs {
			var ref policyRef
			if err := json.Unmarshal(kv.Value, &ref); err != nil {
				return fmt.Errorf("%s policy %s: %w", kind, kv.Key, err)
			}
			cp := set.byDigest[ref.Digest]
			if cp == nil {
				raw, err := v.db.Get(bucketBlobs, []byte(ref.Digest))
				if err != nil {
					return fmt.Errorf("%s policy %s: text: %w", kind, kv.Key, err)
				}
				val, err := v.compile(kind, raw)
				if err != nil {
					v.log.Error().Err(err).Str("policy", string(kv.Key)).Msg("stored policy no longer compiles; agents using it will fail")
				}
				cp = &compiledPolicy{Name: string(kv.Key), Digest: ref.Digest, Value: val}
				set.byDigest[ref.Digest] = cp
			}
			set.byName[string(kv.Key)] = cp
		}
	}
	return nil
}

// putPolicy stores (create: must not exist; else: must exist) a named policy in tx and returns the
// compiled policy to publish after the commit.
func (v *Verifier) putPolicy(tx *store.Tx, kind policyKind, name string, raw []byte, create bool) (*compiledPolicy, error) {
	_, err := tx.Get(kind.bucket(), []byte(name))
	switch {
	case err == nil && create:
		return nil, fmt.Errorf("%w: %s", errPolicyExists, name)
	case errors.Is(err, store.ErrNotFound) && !create:
		return nil, fmt.Errorf("%w: %s", errPolicyMissing, name)
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	digest := digestOf(raw)
	set := v.policies[kind]
	set.mu.RLock()
	cp := set.byDigest[digest]
	set.mu.RUnlock()
	if cp == nil {
		val, err := v.compile(kind, raw)
		if err != nil {
			return nil, httpx.BadRequest("invalid "+kind.field(), err)
		}
		cp = &compiledPolicy{Name: name, Digest: digest, Value: val}
	}
	ref, _ := json.Marshal(policyRef{Digest: digest, Created: v.cfg.Now().UTC()})
	if err := tx.Put(kind.bucket(), []byte(name), ref); err != nil {
		return nil, err
	}
	if err := tx.Put(bucketBlobs, []byte(digest), raw); err != nil {
		return nil, err
	}
	return cp, nil
}

// publish makes a committed policy visible under name.
func (v *Verifier) publish(kind policyKind, name string, cp *compiledPolicy) {
	set := v.policies[kind]
	set.mu.Lock()
	defer set.mu.Unlock()
	if old := set.byName[name]; old != nil && old.Digest != cp.Digest {
		v.dropDigestLocked(set, old.Digest, name)
	}
	set.byName[name] = cp
	set.byDigest[cp.Digest] = cp
}

// dropDigestLocked forgets a compiled policy when no other name uses it.
func (v *Verifier) dropDigestLocked(set *policySet, digest, except string) {
	for n, p := range set.byName {
		if n != except && p.Digest == digest {
			return
		}
	}
	delete(set.byDigest, digest)
}

// deletePolicy removes a named policy in tx; it refuses while an agent uses it.
func (v *Verifier) deletePolicy(tx *store.Tx, kind policyKind, name string) error {
	raw, err := tx.Get(kind.bucket(), []byte(name))
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %s", errPolicyMissing, name)
	}
	if err != nil {
		return err
	}
	users, err := policyUsers(tx, kind, name)
	if err != nil {
		return err
	}
	if len(users) > 0 {
		return fmt.Errorf("%w by agent %s", errPolicyInUse, users[0])
	}
	var ref policyRef
	_ = json.Unmarshal(raw, &ref)
	if err := tx.Delete(kind.bucket(), []byte(name)); err != nil {
		return err
	}
	// Drop the text when no other name points at it.
	shared := false
	err = tx.ForEach(kind.bucket(), func(_, val []byte) error {
		var other policyRef
		if json.Unmarshal(val, &other) == nil && other.Digest == ref.Digest {
			shared = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	other := kindRuntime
	if kind == kindRuntime {
		other = kindMB
	}
	_ = tx.ForEach(other.bucket(), func(_, val []byte) error {
		var o policyRef
		if json.Unmarshal(val, &o) == nil && o.Digest == ref.Digest {
			shared = true
		}
		return nil
	})
	if !shared {
		if err := tx.Delete(bucketBlobs, []byte(ref.Digest)); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return nil
}

func (v *Verifier) unpublish(kind policyKind, name string) {
	set := v.policies[kind]
	set.mu.Lock()
	defer set.mu.Unlock()
	if old := set.byName[name]; old != nil {
		delete(set.byName, name)
		v.dropDigestLocked(set, old.Digest, name)
	}
}

// policyUsers lists the agents whose stored record names the policy (read in tx, so an add committed
// before is seen and one committed after sees the policy gone).
func policyUsers(tx *store.Tx, kind policyKind, name string) ([]string, error) {
	var users []string
	err := tx.ForEach(bucketAgents, func(k, val []byte) error {
		var r struct {
			Runtime string `json:"runtime_policy_name"`
			MB      string `json:"mb_policy_name"`
		}
		if err := json.Unmarshal(val, &r); err != nil {
			return err
		}
		if (kind == kindRuntime && r.Runtime == name) || (kind == kindMB && r.MB == name) {
			users = append(users, string(k))
		}
		return nil
	})
	return users, err
}

// policyHTTPError maps the policy sentinels to Keylime's codes.
func policyHTTPError(err error) error {
	switch {
	case errors.Is(err, errPolicyExists), errors.Is(err, errPolicyInUse):
		return &httpx.Error{Code: http.StatusConflict, Msg: err.Error(), Cause: err}
	case errors.Is(err, errPolicyMissing):
		return &httpx.Error{Code: http.StatusNotFound, Msg: err.Error(), Cause: err}
	}
	return err
}
