package bridge

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/directus-bridge/directus-bridge/directus"
)

// Record is what the bridge remembers about one machine user.
type Record struct {
	UserID string    `json:"user_id"`
	Issuer string    `json:"issuer"` // configured issuer name
	Client string    `json:"client"`
	Token  string    `json:"-"` // the live static token, "" when none; sealed on disk
	Sealed []byte    `json:"token_sealed,omitempty"`
	Expiry time.Time `json:"expires_at,omitzero"`
	// Pending marks a token written ahead of a Directus write whose outcome
	// is not known (yet): it is never handed out, and it is revoked on expiry
	// like any other, so a crash cannot leave an unknown token in Directus.
	Pending bool     `json:"pending,omitempty"`
	Scopes  []string `json:"scopes,omitempty"` // last granted scopes
	// Audiences and Claims of the last subject token that changed the
	// grant, so that the reconciler can re-evaluate the rules.
	Audiences []string            `json:"audiences,omitempty"`
	Claims    map[string][]string `json:"claims,omitempty"`
	Role      string              `json:"role,omitempty"`     // role id granted
	Policies  []directus.Access   `json:"policies,omitempty"` // extra policies granted, with their access rows
	// LastExchange is the time of the client's last successful exchange.
	LastExchange time.Time `json:"last_exchange,omitzero"`
	// SuspendedByBridge: the bridge suspended the user and may reactivate it.
	SuspendedByBridge bool `json:"suspended_by_bridge,omitempty"`
	// SuspendedByAdmin: Directus answered the last write with a status other
	// than active that the bridge did not set; exchanges are refused (after
	// asking Directus again) until an administrator reactivates the user.
	SuspendedByAdmin bool      `json:"suspended_by_admin,omitempty"`
	SuspendedAt      time.Time `json:"suspended_at,omitzero"`
}

// live reports whether r holds a token that may be handed out at now.
func (r *Record) live(now time.Time) bool {
	return r.Token != "" && !r.Pending && now.Before(r.Expiry)
}

// Store keeps records in memory and, when opened on a file, in a bbolt
// database with every token sealed (AES-256-GCM, the user id as associated
// data). Writes are synchronous; LastExchange updates from token reuse are
// batched and written by Flush, since losing one only makes a client look
// idle a little earlier.
type Store struct {
	mu    sync.RWMutex
	recs  map[string]*Record
	dirty map[string]bool
	db    *bolt.DB
	aead  cipher.AEAD
	in    *interner
}

func newInterner() *interner {
	return &interner{strs: map[string]string{}, slices: map[string][]string{}}
}

var bucket = []byte("users")

// NewMemoryStore returns a Store that keeps nothing across restarts (tests).
func NewMemoryStore() *Store {
	return &Store{recs: map[string]*Record{}, dirty: map[string]bool{}, in: newInterner()}
}

// OpenStore opens (or creates) the state file at path with a 32-byte key.
func OpenStore(path string, key []byte) (*Store, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("state: key must be 32 bytes, got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("state: open %s: %w", path, err)
	}
	s := &Store{recs: map[string]*Record{}, dirty: map[string]bool{}, db: db, aead: aead, in: newInterner()}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			r := &Record{}
			if err := json.Unmarshal(v, r); err != nil {
				return fmt.Errorf("record %s: %w", k, err)
			}
			if len(r.Sealed) > 0 {
				plain, err := aead.Open(nil, r.Sealed[:aead.NonceSize()], r.Sealed[aead.NonceSize():], []byte(r.UserID))
				if err != nil {
					return fmt.Errorf("record %s: token does not decrypt (wrong state key?)", k)
				}
				r.Token = string(plain)
			}
			r.Sealed = nil
			s.in.record(r)
			s.recs[r.UserID] = r
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("state: load %s: %w", path, err)
	}
	// Loading touched every page of the memory-mapped file; reopening drops
	// them from the process's resident memory (writes touch only a few).
	if err := db.Close(); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if s.db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second}); err != nil {
		return nil, fmt.Errorf("state: reopen %s: %w", path, err)
	}
	return s, nil
}

// LoadKey returns the state key: from env (base64 of 32 bytes) when set,
// else from keyFile, which is created with a random key (mode 0600) when it
// does not exist.
func LoadKey(envValue, keyFile string) ([]byte, error) {
	if envValue != "" {
		k, err := base64.StdEncoding.DecodeString(envValue)
		if err != nil || len(k) != 32 {
			return nil, errors.New("state: the state key must be the base64 encoding of 32 bytes")
		}
		return k, nil
	}
	b, err := os.ReadFile(keyFile)
	if errors.Is(err, os.ErrNotExist) {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(keyFile), 0o700); err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
		f, err := os.OpenFile(keyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("state: create key file: %w", err)
		}
		_, werr := f.Write([]byte(base64.StdEncoding.EncodeToString(k) + "\n"))
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return nil, fmt.Errorf("state: write key file: %w", werr)
		}
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: read key file: %w", err)
	}
	k, err := base64.StdEncoding.DecodeString(string(trimSpace(b)))
	if err != nil || len(k) != 32 {
		return nil, fmt.Errorf("state: key file %s does not hold base64 of 32 bytes", keyFile)
	}
	return k, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// Get returns a copy of the record for userID.
func (s *Store) Get(userID string) (Record, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.recs[userID]
	if !ok {
		return Record{}, false
	}
	return r.clone(), true
}

// clone copies a record. The slices and maps of a stored record are shared
// and never modified in place: code that changes them assigns new ones.
func (r *Record) clone() Record { return *r }

// interner shares the backing data of values that repeat across records
// (issuer names, role ids, scope and audience sets), which keeps 100,000
// clients in well under 100 MB.
type interner struct {
	strs   map[string]string
	slices map[string][]string
}

func (in *interner) str(s string) string {
	if v, ok := in.strs[s]; ok {
		return v
	}
	in.strs[s] = s
	return s
}

func (in *interner) slice(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	key := strings.Join(s, "\x00")
	if v, ok := in.slices[key]; ok {
		return v
	}
	for i := range s {
		s[i] = in.str(s[i])
	}
	in.slices[key] = s
	return s
}

func (in *interner) record(r *Record) {
	r.Issuer, r.Role = in.str(r.Issuer), in.str(r.Role)
	r.Scopes, r.Audiences = in.slice(r.Scopes), in.slice(r.Audiences)
}

// Put stores r durably before it returns.
func (s *Store) Put(r Record) error {
	return s.PutAll([]Record{r})
}

// PutAll stores records durably in one transaction.
func (s *Store) PutAll(rs []Record) error {
	if s.db != nil {
		err := s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucket)
			for i := range rs {
				v, err := s.encode(&rs[i])
				if err != nil {
					return err
				}
				if err := b.Put([]byte(rs[i].UserID), v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("state: write: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range rs {
		c := rs[i].clone()
		s.in.record(&c)
		s.recs[c.UserID] = &c
		delete(s.dirty, c.UserID)
	}
	return nil
}

func (s *Store) encode(r *Record) ([]byte, error) {
	c := *r
	c.Sealed = nil
	if r.Token != "" {
		nonce := make([]byte, s.aead.NonceSize())
		if _, err := rand.Read(nonce); err != nil {
			return nil, err
		}
		c.Sealed = s.aead.Seal(nonce, nonce, []byte(r.Token), []byte(r.UserID))
	}
	return json.Marshal(&c)
}

// Touch records an exchange that changed nothing else; Flush persists it.
func (s *Store) Touch(userID string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.recs[userID]; r != nil && at.After(r.LastExchange) {
		r.LastExchange = at
		s.dirty[userID] = true
	}
}

// Flush writes the records changed by Touch.
func (s *Store) Flush() error {
	s.mu.RLock()
	var rs []Record
	for id := range s.dirty {
		if r := s.recs[id]; r != nil {
			rs = append(rs, r.clone())
		}
	}
	s.mu.RUnlock()
	if len(rs) == 0 {
		return nil
	}
	return s.PutAll(rs)
}

// All returns a copy of every record.
func (s *Store) All() []Record {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Record, 0, len(s.recs))
	for _, r := range s.recs {
		out = append(out, r.clone())
	}
	return out
}

// Len returns the number of records.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.recs)
}

// Close flushes and closes the state file.
func (s *Store) Close() error {
	err := s.Flush()
	if s.db != nil {
		if cerr := s.db.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// LiveTokens counts the records holding a token that has not expired.
func (s *Store) LiveTokens(now time.Time) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, r := range s.recs {
		if r.Token != "" && now.Before(r.Expiry) {
			n++
		}
	}
	return n
}
