package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"

	"executor/netns"
)

// health is one GET /v1/health, with the key or without.
func (x *executor) health(t testing.TB, keyed bool) *response {
	t.Helper()
	req, err := http.NewRequest("GET", x.url+"/v1/health", nil)
	if err != nil {
		t.Fatal(err)
	}
	if keyed {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	return do(t, req)
}

// waitHealth polls GET /v1/health (with the key) until it answers status;
// the daemon reuses a check's verdict for a second.
func (x *executor) waitHealth(t testing.TB, status int) *response {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := x.health(t, true)
		if r.status == status {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /v1/health: %d %s, want %d", r.status, r.body, status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// assertUnhealthy checks a 503 is the API's error document, with want in its
// message, and the message without the key names part and not secretDetail
// (the host's details; "" when there are none).
func assertUnhealthy(t testing.TB, x *executor, keyed *response, want []string, part, secretDetail string) {
	t.Helper()
	if ct := keyed.header.Get("Content-Type"); ct != "application/json; charset=UTF-8" {
		t.Errorf("503 content type %q", ct)
	}
	doc := keyed.json(t)
	msg, _ := doc["message"].(string)
	if doc["type"] != "general_unknown" || doc["code"] != float64(503) || doc["version"] == nil {
		t.Errorf("503 body is not the error document: %s", keyed.body)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("503 message %q does not name %q", msg, w)
		}
	}
	public := x.health(t, false)
	pmsg, _ := public.json(t)["message"].(string)
	if public.status != 503 || !strings.Contains(pmsg, part) || (secretDetail != "" && strings.Contains(pmsg, secretDetail)) {
		t.Errorf("without the key: %d %s, want a 503 naming %q and not %q", public.status, public.body, part, secretDetail)
	}
}

// TestHealthReadiness breaks, under a running daemon, each part of the host
// its runtimes need, and checks GET /v1/health turns 503 naming it, and, for
// what can be repaired, 200 again once it is. An intact daemon answers the
// 200 documents of before.
func TestHealthReadiness(t *testing.T) {
	type damage func(t *testing.T, x *executor) (repair func())
	run := func(t *testing.T, name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	// parentDirs are the cgroup parent's directories, on every hierarchy.
	parentDirs := func(t *testing.T, x *executor) []string {
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", x.cgParent))
		if cgroup2() {
			dirs = []string{filepath.Join("/sys/fs/cgroup", x.cgParent)}
		}
		if len(dirs) == 0 {
			t.Fatalf("the daemon made no cgroup parent %s", x.cgParent)
		}
		return dirs
	}
	tests := []struct {
		name   string
		damage damage
		// want are in the message with the key; part is in the message
		// without; detail, in the former, must not be in the latter.
		want         func(x *executor) []string
		part, detail func(x *executor) string
	}{
		{name: "intact"},
		{
			name: "bridge deleted",
			damage: func(t *testing.T, x *executor) func() {
				run(t, "ip", "link", "del", netns.BridgeName(x.network))
				return nil
			},
			want: func(x *executor) []string {
				return []string{"network " + x.network, "bridge " + netns.BridgeName(x.network) + " is missing"}
			},
		},
		{
			name: "bridge down",
			damage: func(t *testing.T, x *executor) func() {
				run(t, "ip", "link", "set", netns.BridgeName(x.network), "down")
				return func() { run(t, "ip", "link", "set", netns.BridgeName(x.network), "up") }
			},
			want: func(x *executor) []string { return []string{"bridge " + netns.BridgeName(x.network) + " is down"} },
		},
		{
			name: "firewall table deleted",
			damage: func(t *testing.T, x *executor) func() {
				c, err := nftables.New()
				if err != nil {
					t.Fatal(err)
				}
				c.DelTable(&nftables.Table{Name: netns.TableName(netns.BridgeName(x.network)), Family: nftables.TableFamilyINet})
				if err := c.Flush(); err != nil {
					t.Fatal(err)
				}
				return nil
			},
			want: func(x *executor) []string {
				return []string{"nftables table inet " + netns.TableName(netns.BridgeName(x.network)) + " is missing"}
			},
		},
		{
			name: "cgroup parent removed",
			damage: func(t *testing.T, x *executor) func() {
				dirs := parentDirs(t, x)
				for _, d := range dirs {
					// rmdir: it holds no runtime, so it is empty.
					if err := os.Remove(d); err != nil {
						t.Fatal(err)
					}
				}
				return func() {
					for _, d := range dirs {
						if err := os.Mkdir(d, 0o755); err != nil {
							t.Fatal(err)
						}
					}
				}
			},
			want: func(x *executor) []string {
				return []string{"unhealthy: cgroup parent /sys/fs/cgroup/", x.cgParent + " is missing"}
			},
			part:   func(*executor) string { return "cgroup parent" },
			detail: func(x *executor) string { return x.cgParent },
		},
		{
			name: "data dir moved away",
			damage: func(t *testing.T, x *executor) func() {
				if err := os.Rename(x.dataDir, x.dataDir+".moved"); err != nil {
					t.Fatal(err)
				}
				back := func() { _ = os.Rename(x.dataDir+".moved", x.dataDir) }
				t.Cleanup(back) // before the daemon stops, even on failure
				return back
			},
			want:   func(x *executor) []string { return []string{"data dir " + x.dataDir + " is missing"} },
			part:   func(*executor) string { return "data dir" },
			detail: func(x *executor) string { return x.dataDir },
		},
		{
			name: "data dir read-only",
			damage: func(t *testing.T, x *executor) func() {
				run(t, "mount", "--bind", x.dataDir, x.dataDir)
				mounted := true
				unmount := func() {
					if mounted {
						run(t, "umount", x.dataDir)
						mounted = false
					}
				}
				t.Cleanup(unmount)
				run(t, "mount", "-o", "remount,bind,ro", x.dataDir)
				return unmount
			},
			want: func(x *executor) []string {
				return []string{"data dir " + x.dataDir + " is on a read-only file system"}
			},
			part:   func(*executor) string { return "data dir" },
			detail: func(x *executor) string { return x.dataDir },
		},
	}
	keyedPass := regexp.MustCompile(`^\{"status":"pass","usage":[0-9.eE+-]+,"memory":\{"total":[0-9]+,"available":[0-9]+\},"runtimes":\{\}\}$`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := startExecutor(t)
			// The 200 documents of before, byte for byte.
			if r := x.health(t, false); r.status != 200 || string(r.body) != `{"status":"pass"}` || r.header.Get("Content-Type") != "application/json; charset=UTF-8" {
				t.Fatalf("healthy, without the key: %d %q %s", r.status, r.header.Get("Content-Type"), r.body)
			}
			if r := x.health(t, true); r.status != 200 || !keyedPass.Match(r.body) {
				t.Fatalf("healthy, with the key: %d %s", r.status, r.body)
			}
			if tt.damage == nil {
				return
			}
			repair := tt.damage(t, x)
			r := x.waitHealth(t, 503)
			part, detail := "network", netns.BridgeName(x.network)
			if tt.part != nil {
				part, detail = tt.part(x), tt.detail(x)
			}
			assertUnhealthy(t, x, r, tt.want(x), part, detail)
			if repair != nil {
				repair()
				x.waitHealth(t, 200)
			}
		})
	}
}

// TestHealthDraining: after SIGTERM, while an execution is still running,
// GET /v1/health answers 503 "draining" on the still open listener and new
// work is turned away; the execution completes and the daemon exits 0.
func TestHealthDraining(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	// Warm first: the slow execution below then starts at once.
	if r := x.request(t, "POST", "/v1/runtimes/slow/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		t.Fatalf("warm-up execution: %d %s", r.status, r.body)
	}
	const sleep = 4 * time.Second
	type reply struct {
		r   *response
		err error
	}
	slow := make(chan reply, 1)
	go func() {
		r, err := x.send("POST", "/v1/runtimes/slow/executions", map[string]any{"path": "/shell", "method": "POST", "timeout": 30,
			"body": fmt.Sprintf("touch /tmp/in-flight; sleep %d; echo done", int(sleep.Seconds()))}, jsonAccept)
		slow <- reply{r, err}
	}()
	// SIGTERM only once the execution has reached the runtime (its script
	// left its mark): a request still on its way would be turned away.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if out, _ := command(t, x, "slow", "test -e /tmp/in-flight && echo in-flight"); out == "in-flight\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow execution did not reach the runtime")
		}
	}
	if err := x.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	signalled := time.Now()

	r := x.waitHealth(t, 503)
	select {
	case s := <-slow:
		t.Fatalf("the execution ended (%+v %v) before health answered 503: the drain was not seen", s.r, s.err)
	default:
	}
	assertUnhealthy(t, x, r, []string{"draining"}, "draining", "")
	if r := x.request(t, "GET", "/v1/runtimes", nil, nil); r.status != 503 || r.json(t)["message"] != "Executor is shutting down." {
		t.Errorf("new work while draining: %d %s", r.status, r.body)
	}

	select {
	case s := <-slow:
		if s.err != nil {
			t.Errorf("the execution in flight at SIGTERM: %v", s.err)
		} else if s.r.status != 200 || s.r.json(t)["statusCode"] != float64(200) || s.r.json(t)["body"] != "done\n" {
			t.Errorf("the execution in flight at SIGTERM: %d %s", s.r.status, s.r.body)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the execution in flight at SIGTERM did not end")
	}
	select {
	case <-x.exited:
		if x.exitErr != nil {
			t.Errorf("executor exited with %v after the drain", x.exitErr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("executor did not exit after the drain")
	}
	if took := time.Since(signalled); took < sleep/2 {
		t.Errorf("executor exited %v after SIGTERM, before the %v execution could end", took, sleep)
	}
}
