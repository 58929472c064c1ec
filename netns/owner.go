package netns

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
)

// Ownership. Bridge and table names derive from the network name alone, so
// two executors given the same name (or a stale bridge of another program)
// would otherwise share them, and one's Close or Reset would tear down the
// other's runtimes' network. Each network therefore has an owner id: random,
// made once and kept in <StateDir>/owner, so it survives restarts and crashes
// and is never shared by two data dirs (even ones at the same path in two
// mount namespaces). The bridge carries it in its alias (IFLA_IFALIAS,
// `ip link show` prints it), every nftables rule of ours in its comment.
// New refuses a bridge or table with another mark; one with no mark (made by
// an older version, which marked nothing) is adopted only when the state dir
// shows that this network ran before. Close removes only what bears our mark.

// ownerFile in StateDir holds the ownerRecord.
const ownerFile = "owner"

// markPrefix starts every owner mark, so that other executors' marks are
// recognised as such in messages.
const markPrefix = "executor owner="

type ownerRecord struct {
	Owner  string `json:"owner"`
	Bridge string `json:"bridge"`
}

// ForeignError says that an interface or nftables table New needs is
// someone else's: another executor's (Mark set), or another program's.
type ForeignError struct {
	// What is "bridge" or "nftables table", Name its name.
	What, Name string
	// Mark is the owner mark found on it; "" when it has none.
	Mark string
	// Detail says why it is not ours.
	Detail string
}

func (e *ForeignError) Error() string {
	return fmt.Sprintf("netns: %s %s is not this executor's: %s; this executor never deletes, resets or reuses it: choose another network name, or remove it if nothing uses it", e.What, e.Name, e.Detail)
}

// owner is this network's identity and what its state dir knew at start.
type owner struct {
	id string
	// recorded: the state dir knew this bridge before this start, so an
	// unmarked bridge or table of that name is ours from an older version.
	recorded bool
	// fresh: the id was made now and is saved by save.
	fresh    bool
	stateDir string
	bridge   string
}

// readOwner reads the owner id of stateDir, or makes one (saved by save)
// when it has none. It writes nothing.
func readOwner(stateDir, bridge string) (*owner, error) {
	o := &owner{stateDir: stateDir, bridge: bridge}
	b, err := os.ReadFile(filepath.Join(stateDir, ownerFile))
	switch {
	case err == nil:
		var r ownerRecord
		if err := json.Unmarshal(b, &r); err != nil || r.Owner == "" {
			return nil, fmt.Errorf("netns: owner record %s is damaged (%v): remove it only if no bridge %s of this data dir exists", filepath.Join(stateDir, ownerFile), err, bridge)
		}
		if r.Bridge != bridge {
			return nil, fmt.Errorf("netns: state dir %s belongs to bridge %s, not %s", stateDir, r.Bridge, bridge)
		}
		o.id, o.recorded = r.Owner, true
		return o, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("netns: owner record: %w", err)
	}
	// Versions before owner records kept only these two directories; they
	// exist after a crash of such a version.
	for _, d := range []string{"ns", "leases"} {
		if _, err := os.Stat(filepath.Join(stateDir, d)); err == nil {
			o.recorded = true
		}
	}
	buf := make([]byte, 16)
	if _, err := rand.Read(buf); err != nil {
		return nil, err
	}
	o.id, o.fresh = hex.EncodeToString(buf), true
	return o, nil
}

// save writes a fresh owner id durably, before anything carries it: after a
// crash at any later point the next start has the id of every mark made.
func (o *owner) save() error {
	if !o.fresh {
		return nil
	}
	if err := os.MkdirAll(o.stateDir, 0o700); err != nil {
		return fmt.Errorf("netns: state dir: %w", err)
	}
	b, err := json.Marshal(ownerRecord{Owner: o.id, Bridge: o.bridge})
	if err != nil {
		return err
	}
	path := filepath.Join(o.stateDir, ownerFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("netns: owner record: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("netns: owner record: %w", err)
	}
	o.fresh = false
	return nil
}

// mark is what our bridge and rules carry.
func (o *owner) mark() string { return markPrefix + o.id }

// alias is the bridge's alias: the mark, then the state dir, which tells an
// operator (and another executor's error message) whose bridge it is.
func (o *owner) alias() string {
	a := o.mark() + " state=" + o.stateDir
	const max = 255 // IFALIASZ less the NUL
	if len(a) > max {
		a = a[:max]
	}
	return a
}

// markOf extracts the owner mark from a bridge alias; "" for none.
func markOf(alias string) string {
	if !strings.HasPrefix(alias, markPrefix) {
		return ""
	}
	m, _, _ := strings.Cut(alias, " state=")
	return m
}

// checkBridge decides whether an existing link named like our bridge may be
// used. adopt: it is ours but unmarked (an older version's).
func (o *owner) checkBridge(l netlink.Link) (adopt bool, err error) {
	name := l.Attrs().Name
	if l.Type() != "bridge" {
		return false, &ForeignError{What: "interface", Name: name, Detail: fmt.Sprintf("it is a %s, not a bridge", l.Type())}
	}
	switch m := markOf(l.Attrs().Alias); {
	case m == o.mark():
		return false, nil
	case m != "":
		return false, &ForeignError{What: "bridge", Name: name, Mark: m, Detail: fmt.Sprintf("it belongs to another executor (alias %q)", l.Attrs().Alias)}
	case !o.recorded:
		return false, &ForeignError{What: "bridge", Name: name, Detail: fmt.Sprintf("it has no owner mark and %s does not record it (another executor of an older version, or another program, made it)", o.stateDir)}
	}
	return true, nil
}

// Rule comments are libnftnl's user data: a type-length-value list where
// type 0 is the comment, NUL-terminated; nft(8) prints it as comment "...".
const udataRuleComment = 0

func ruleComment(s string) []byte {
	v := append([]byte(s), 0)
	return append([]byte{udataRuleComment, byte(len(v))}, v...)
}

// commentOf returns a rule's comment; "" for none.
func commentOf(udata []byte) string {
	for len(udata) >= 2 {
		typ, n := udata[0], int(udata[1])
		if len(udata) < 2+n {
			return ""
		}
		if typ == udataRuleComment {
			return string(bytes.TrimRight(udata[2:2+n], "\x00"))
		}
		udata = udata[2+n:]
	}
	return ""
}

// tableMarks returns the owner marks the rules of table t carry; exists is
// false when there is no such table.
func tableMarks(c *nftables.Conn, t *nftables.Table) (marks map[string]bool, exists bool, err error) {
	if _, err := c.ListTableOfFamily(t.Name, t.Family); err != nil {
		if isNotFound(err) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("netns: look up nftables table %s: %w", t.Name, err)
	}
	chains, err := c.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return nil, true, fmt.Errorf("netns: list nftables chains: %w", err)
	}
	marks = map[string]bool{}
	for _, ch := range chains {
		if ch.Table.Name != t.Name {
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return nil, true, fmt.Errorf("netns: list rules of %s: %w", t.Name, err)
		}
		for _, r := range rules {
			if m := commentOf(r.UserData); strings.HasPrefix(m, markPrefix) {
				marks[m] = true
			}
		}
	}
	return marks, true, nil
}

// checkTables refuses tables of our names that carry another's mark, or no
// mark at all unless the state dir records this network.
func (o *owner) checkTables(c *nftables.Conn, tables ...*nftables.Table) error {
	for _, t := range tables {
		marks, exists, err := tableMarks(c, t)
		if err != nil || !exists || marks[o.mark()] {
			if err != nil {
				return err
			}
			continue
		}
		what := tableWhat(t)
		for m := range marks {
			return &ForeignError{What: what, Name: t.Name, Mark: m, Detail: fmt.Sprintf("its rules belong to another executor (%s)", m)}
		}
		if !o.recorded {
			return &ForeignError{What: what, Name: t.Name, Detail: fmt.Sprintf("it has no owner mark and %s does not record it", o.stateDir)}
		}
	}
	return nil
}

func tableWhat(t *nftables.Table) string {
	f := fmt.Sprint(t.Family)
	switch t.Family {
	case nftables.TableFamilyINet:
		f = "inet"
	case nftables.TableFamilyBridge:
		f = "bridge"
	}
	return "nftables table " + f
}
