package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// keyQuota is one line of /proc/key-users: what the kernel counts against a
// host uid (kernel.keys.maxkeys for every uid but root).
type keyQuota struct {
	nkeys, qnkeys, maxkeys int
}

// keyUsers reads uid's line of /proc/key-users; a uid without one holds no
// keys.
func keyUsers(t testing.TB, uid int64) keyQuota {
	t.Helper()
	b, err := os.ReadFile("/proc/key-users")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		// "  uid: usage nkeys/nikeys qnkeys/maxkeys qnbytes/maxbytes"
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != strconv.FormatInt(uid, 10)+":" {
			continue
		}
		var q keyQuota
		var nikeys int
		if _, err := fmt.Sscanf(f[2]+" "+f[3], "%d/%d %d/%d", &q.nkeys, &nikeys, &q.qnkeys, &q.maxkeys); err != nil {
			t.Fatalf("/proc/key-users: %q: %v", line, err)
		}
		return q
	}
	return keyQuota{}
}

// maxKeys is kernel.keys.maxkeys: how many keys a non-root uid may own.
func maxKeys(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/keys/maxkeys")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// joinAnonymousSessionKeyring gives the calling thread (locked to its
// goroutine and never unlocked, so that it exits with it) a new, empty
// session keyring; processes started from it inherit that keyring.
func joinAnonymousSessionKeyring(t testing.TB) int {
	t.Helper()
	runtime.LockOSThread()
	// KEYCTL_JOIN_SESSION_KEYRING with a NULL name: a new anonymous keyring.
	id, _, errno := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0)
	if errno != 0 {
		t.Fatalf("join a new session keyring: %v", errno)
	}
	return int(id)
}

// fillKeyQuota makes uid own as many keys as kernel.keys.maxkeys allows, as
// other executors' runtimes or other programs of that uid would, without
// touching the host-wide setting: root adds keys to a keyring of its own and
// gives them to uid (KEYCTL_CHOWN moves them into uid's quota). It returns
// how many uid owns then; the keys are removed, and the quota given back,
// when the test ends.
func fillKeyQuota(t *testing.T, uid int64) int {
	t.Helper()
	type filled struct {
		n   int
		err error
	}
	res := make(chan filled, 1)
	done := make(chan struct{})
	cleared := make(chan struct{})
	go func() {
		defer close(cleared)
		// A thread of its own: the daemon, started from the test's, does
		// not get these keys in its session keyring.
		runtime.LockOSThread()
		id, _, errno := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0)
		if errno != 0 {
			res <- filled{err: fmt.Errorf("join a new session keyring: %w", errno)}
			return
		}
		ring := int(id)
		defer func() {
			<-done
			_, _ = unix.KeyctlInt(unix.KEYCTL_CLEAR, ring, 0, 0, 0)
		}()
		n := 0
		for {
			key, err := unix.AddKey("user", fmt.Sprintf("e2e-fill-%d", n), []byte("x"), ring)
			if err != nil {
				res <- filled{err: fmt.Errorf("add key %d: %w", n, err)}
				return
			}
			if _, err := unix.KeyctlInt(unix.KEYCTL_CHOWN, key, int(uid), -1, 0); errors.Is(err, unix.EDQUOT) {
				_, _ = unix.KeyctlInt(unix.KEYCTL_UNLINK, key, ring, 0, 0)
				break
			} else if err != nil {
				res <- filled{err: fmt.Errorf("give key %d to uid %d: %w", n, uid, err)}
				return
			}
			n++
		}
		res <- filled{n: n}
	}()
	t.Cleanup(func() {
		close(done)
		<-cleared
		// Unlinked keys are collected by the kernel's key GC, at once.
		deadline := time.Now().Add(10 * time.Second)
		for keyUsers(t, uid).nkeys > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if q := keyUsers(t, uid); q.nkeys > 0 {
			t.Errorf("uid %d still owns %d keys after the test gave its keys up", uid, q.nkeys)
		}
	})
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.n
}

// keyringRuntimeRoot is a host uid no other test's runtimes have as root,
// so that what /proc/key-users counts for it is this test's alone.
func keyringRuntimeRoot() int64 { return 3_000_000_000 + int64(os.Getpid()%1000)*65536 }

// Runtimes take nothing from the kernel's key quota of their root's host uid
// (kernel.keys.maxkeys, 200 keys by default). Every runtime of every executor
// on the host has the same root; a keyring per runtime made the 201st fail
// with "unable to join session keyring: ... disk quota exceeded". Here that
// uid's quota is full before the daemon starts, so even the first runtime
// would fail if it made a key.
func TestRuntimesUseNoKeyQuota(t *testing.T) {
	uid := keyringRuntimeRoot()
	if q := keyUsers(t, uid); q.nkeys != 0 {
		t.Fatalf("uid %d owns %d keys before the test", uid, q.nkeys)
	}
	max := maxKeys(t)
	if max > 10000 {
		t.Skipf("kernel.keys.maxkeys is %d: too many keys to fill the quota with", max)
	}
	filled := fillKeyQuota(t, uid)
	if q := keyUsers(t, uid); q.qnkeys != filled || q.qnkeys != q.maxkeys {
		t.Fatalf("uid %d's key quota after filling it with %d keys: %+v", uid, filled, q)
	}
	x := startExecutor(t, fmt.Sprintf("OPR_EXECUTOR_USERNS=%d:65536", uid))
	const n = 5
	for i := range n {
		id := fmt.Sprintf("keys-%d", i)
		createIdle(t, x, id, nil)
		// An exec (commands, the build steps) joins no keyring either.
		if out, status := command(t, x, id, "echo ok"); status != 200 || strings.TrimSpace(out) != "ok" {
			t.Fatalf("command in %s: %d %q", id, status, out)
		}
	}
	if q := keyUsers(t, uid); q.nkeys != filled || q.qnkeys != filled {
		t.Fatalf("uid %d's keys went from %d to %+v with %d runtimes", uid, filled, q, n)
	}
	t.Logf("%d runtimes created and used with uid %d's key quota full (%d/%d keys)", n, uid, filled, max)
}

// keyProbe tries every way a process has to reach its session keyring and a
// key in it. It is built static, with the standard library only, and run
// inside a runtime: keyprobe SERIAL DESCRIPTION [write].
const keyProbe = `package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"unsafe"
)

const (
	getKeyringID = 0
	join         = 1
	describe     = 6
	search       = 10
	read         = 11
	sessionRing  = -3
)

func keyctl(cmd int, a2, a3, a4, a5 uintptr) (uintptr, error) {
	r, _, e := syscall.Syscall6(syscall.SYS_KEYCTL, uintptr(cmd), a2, a3, a4, a5, 0)
	if e != 0 {
		return 0, e
	}
	return r, nil
}

func report(op string, r uintptr, buf []byte, err error) {
	if err != nil {
		fmt.Printf("%s: error %v\n", op, err)
		return
	}
	if buf != nil && int(r) <= len(buf) {
		fmt.Printf("%s: ok %q\n", op, buf[:r])
		return
	}
	fmt.Printf("%s: ok %d\n", op, int64(r))
}

func main() {
	serial, _ := strconv.ParseInt(os.Args[1], 10, 64)
	desc := os.Args[2]
	user, _ := syscall.BytePtrFromString("user")
	d, _ := syscall.BytePtrFromString(desc)
	ring := int64(sessionRing)
	sess := uintptr(ring)
	buf := make([]byte, 4096)

	r, err := keyctl(getKeyringID, sess, 0, 0, 0)
	report("session keyring", r, nil, err)
	r, err = keyctl(search, sess, uintptr(unsafe.Pointer(user)), uintptr(unsafe.Pointer(d)), 0)
	report("search", r, nil, err)
	r, err = keyctl(describe, uintptr(serial), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0)
	report("describe key", r, buf, err)
	r, err = keyctl(read, uintptr(serial), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0)
	report("read key", r, buf, err)
	r, err = keyctl(read, sess, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0)
	report("read session keyring", r, buf, err)
	r, _, e := syscall.Syscall6(syscall.SYS_REQUEST_KEY, uintptr(unsafe.Pointer(user)), uintptr(unsafe.Pointer(d)), 0, 0, 0, 0)
	if e != 0 {
		err = e
	} else {
		err = nil
	}
	report("request_key", r, nil, err)
	if len(os.Args) > 3 && os.Args[3] == "write" {
		planted, _ := syscall.BytePtrFromString("planted")
		payload := []byte("x")
		r, _, e = syscall.Syscall6(syscall.SYS_ADD_KEY, uintptr(unsafe.Pointer(user)), uintptr(unsafe.Pointer(planted)), uintptr(unsafe.Pointer(&payload[0])), 1, sess, 0)
		if e != 0 {
			err = e
		} else {
			err = nil
		}
		report("add_key", r, nil, err)
		r, err = keyctl(join, 0, 0, 0, 0)
		report("join", r, nil, err)
	}
	b, err := os.ReadFile("/proc/keys")
	fmt.Printf("/proc/keys: %q %v\n", b, err)
}
`

// buildKeyProbe builds keyProbe, static, for a runtime's busybox image.
func buildKeyProbe(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module keyprobe\n\ngo 1.21\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(keyProbe), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", "keyprobe", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the key probe: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "keyprobe"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Under the default seccomp profile a runtime has the daemon's session
// keyring as its own (it makes none: see TestRuntimesUseNoKeyQuota), and
// neither its user namespace nor its host uid would keep it from a key
// there: it possesses that keyring. It still reaches none of the daemon's
// keys, nor can it add any: the profile refuses every keyring system call,
// and /proc/keys is masked. Unconfined (OPR_EXECUTOR_SECCOMP=unconfined),
// where nothing would refuse them, a runtime has a keyring of its own
// instead, and the daemon's keys stay out of its reach all the same.
func TestRuntimesCannotReachTheDaemonsKeys(t *testing.T) {
	probe := buildKeyProbe(t)
	// The daemon, started from this thread, gets this session keyring and
	// the key in it, readable by whoever possesses it (add_key's default).
	ring := joinAnonymousSessionKeyring(t)
	secretBytes := make([]byte, 16)
	if _, err := rand.Read(secretBytes); err != nil {
		t.Fatal(err)
	}
	secret := "daemon-secret-" + hex.EncodeToString(secretBytes)
	desc := fmt.Sprintf("executor-e2e-daemon-key-%d", os.Getpid())
	key, err := unix.AddKey("user", desc, []byte(secret), ring)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{strconv.Itoa(key), desc}

	// The probe finds the key from a process started here, as the daemon is.
	probePath := filepath.Join(t.TempDir(), "keyprobe")
	if err := os.WriteFile(probePath, probe, 0o755); err != nil {
		t.Fatal(err)
	}
	host, err := exec.Command(probePath, args...).CombinedOutput()
	if err != nil || !strings.Contains(string(host), strconv.Quote(secret)) || !strings.Contains(string(host), "search: ok "+strconv.Itoa(key)) {
		t.Fatalf("the probe does not read the key from a child of the test (%v):\n%s", err, host)
	}

	// No subtests: each daemon must start from this thread.
	for _, tc := range []struct {
		name    string
		extra   []string
		seccomp bool
	}{
		{"default seccomp profile", nil, true},
		{"unconfined", []string{"OPR_EXECUTOR_SECCOMP=unconfined"}, false},
	} {
		x := startExecutor(t, tc.extra...)
		createIdle(t, x, "keys", map[string]any{"source": source(t, map[string]string{"index.js": "x", "keyprobe": string(probe)})})
		// The create answers once the runtime runs, before its start
		// script has unpacked the probe; an execution answers only once
		// the server listens, which is after that.
		if r := x.request(t, "POST", "/v1/runtimes/keys/executions", map[string]any{"path": "/"}, nil); r.status != 200 {
			t.Fatalf("%s: first execution: %d %s", tc.name, r.status, r.body)
		}
		out, status := command(t, x, "keys", "cd /usr/local/server/src/function && chmod 755 keyprobe && ./keyprobe "+strings.Join(args, " ")+" write 2>&1")
		if status != 200 {
			t.Fatalf("%s: run the probe: %d %s", tc.name, status, out)
		}
		t.Logf("%s: inside the runtime:\n%s", tc.name, out)
		if strings.Contains(out, secret) || strings.Contains(out, desc) || strings.Contains(out, "search: ok") {
			t.Errorf("%s: the runtime reached the daemon's key:\n%s", tc.name, out)
		}
		if tc.seccomp {
			for _, op := range []string{"session keyring", "search", "describe key", "read key", "read session keyring", "request_key", "add_key", "join"} {
				if !strings.Contains(out, op+": error operation not permitted\n") {
					t.Errorf("%s: %s was not refused with EPERM inside the runtime", tc.name, op)
				}
			}
		}
		if !strings.Contains(out, `/proc/keys: "" <nil>`) {
			t.Errorf("%s: /proc/keys is not empty inside the runtime", tc.name)
		}
		// Nothing was added to the daemon's session keyring: it holds
		// the one key (a serial is 4 bytes).
		if n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, ring, make([]byte, 64), 0); err != nil || n != 4 {
			t.Errorf("%s: the daemon's session keyring holds %d bytes of key serials (%v), want the one key", tc.name, n, err)
		}
	}
}
