package store

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Migration moves a store file from schema Version-1 (or the previous
// migration's version) to Version. Versions start at 1 and must be strictly
// increasing in the list handed to Open; a migration, once released, is never
// edited or removed, only followed by new ones.
type Migration struct {
	// Version is the schema version the file has after Apply.
	Version int
	// Name describes the change, for errors and logs.
	Name string
	// Apply changes the data; it runs in its own transaction together with the version bump.
	Apply func(tx *Tx) error
}

func checkMigrations(ms []Migration) error {
	prev := 0
	for i, m := range ms {
		switch {
		case m.Version <= prev:
			return fmt.Errorf("migration %d (%q): version %d after %d: %w", i, m.Name, m.Version, prev, ErrInvalidMigrations)
		case m.Apply == nil:
			return fmt.Errorf("migration %d (%q): nil Apply: %w", i, m.Name, ErrInvalidMigrations)
		}
		prev = m.Version
	}
	return nil
}

// migrate records the meta bucket on a fresh file, refuses a file newer than
// the code, then applies each pending migration in its own transaction. A
// failing migration rolls back (data and version) and stops the walk; earlier
// migrations stay committed.
func (db *DB) migrate(ms []Migration) error {
	latest := 0
	if len(ms) > 0 {
		latest = ms[len(ms)-1].Version
	}
	var cur int
	err := db.bolt.Update(func(tx *bolt.Tx) (err error) {
		if cur, err = readVersion(tx); err != nil {
			return err
		}
		if tx.Bucket([]byte(MetaBucket)) == nil {
			return writeVersion(tx, 0)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if cur > latest {
		return fmt.Errorf("file has schema version %d, this program knows up to %d: %w", cur, latest, ErrSchemaTooNew)
	}
	for _, m := range ms {
		if m.Version <= cur {
			continue
		}
		err := db.bolt.Update(func(tx *bolt.Tx) error {
			if err := m.Apply(&Tx{tx: tx}); err != nil {
				return err
			}
			return writeVersion(tx, m.Version)
		})
		if err != nil {
			return fmt.Errorf("migration %d (%s) from version %d: %w", m.Version, m.Name, cur, err)
		}
		cur = m.Version
	}
	return nil
}
