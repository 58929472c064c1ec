package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// attackResult says whether an attempt from inside the runtime worked.
type attackResult struct {
	What   string `json:"what"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// attacks are things untrusted code may try; each returns nil when it
// succeeded. The executor's tests expect every one of them to fail.
var attacks = map[string]func() (string, error){
	"mount": func() (string, error) {
		if err := os.MkdirAll("/tmp/attack-mnt", 0o755); err != nil {
			return "", err
		}
		return "", unix.Mount("tmpfs", "/tmp/attack-mnt", "tmpfs", 0, "")
	},
	"unshare-mount": func() (string, error) { return runCmd("unshare", "-m", "true") },
	"unshare-user":  func() (string, error) { return runCmd("unshare", "-U", "true") },
	"keyctl": func() (string, error) {
		_, err := unix.KeyctlJoinSessionKeyring("attack")
		return "", err
	},
	"mknod": func() (string, error) {
		return "", unix.Mknod("/tmp/attack-null", unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3)))
	},
	"raw-socket": func() (string, error) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
		if err == nil {
			unix.Close(fd)
		}
		return "", err
	},
	"load-module": func() (string, error) {
		return "", unix.InitModule([]byte{0x7f, 'E', 'L', 'F'}, "")
	},
	"reboot": func() (string, error) {
		return "", unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
	},
	"kcore": func() (string, error) {
		f, err := os.Open("/proc/kcore")
		if err != nil {
			return "", err
		}
		defer f.Close()
		n, err := io.ReadFull(f, make([]byte, 64))
		if n == 0 {
			return "read 0 bytes", errors.New("empty")
		}
		return "", err
	},
	"sysrq": func() (string, error) {
		return "", os.WriteFile("/proc/sysrq-trigger", []byte("h"), 0)
	},
	"firmware": func() (string, error) {
		ents, err := os.ReadDir("/sys/firmware")
		if err != nil {
			return "", err
		}
		if len(ents) == 0 {
			return "empty", errors.New("nothing visible")
		}
		return "", nil
	},
	"ptrace-host": func() (string, error) {
		// Host processes are not visible at all: the highest PID in view is
		// small and no process of the host's init is there.
		ents, _ := os.ReadDir("/proc")
		pids := 0
		for _, e := range ents {
			if e.Name()[0] >= '0' && e.Name()[0] <= '9' {
				pids++
			}
		}
		// PID 1 is the executor's init (/.executor-init, given its command
		// on the command line or parked), or the runtime's own command.
		cmd, _ := os.ReadFile("/proc/1/cmdline")
		ours := strings.HasPrefix(string(cmd), "/.executor-init\x00") || strings.Contains(string(cmd), "sh")
		if strings.Contains(string(cmd), "systemd") || strings.Contains(string(cmd), "init") && !ours {
			return "host init visible", nil
		}
		err := unix.PtraceAttach(4194303) // beyond any PID this namespace has
		return "", errors.Join(err, errors.New("host pids invisible"))
	},
	"setuid-root-files": func() (string, error) {
		// no_new_privs: a setuid binary would not raise privileges.
		v, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
		if err != nil {
			return "", err
		}
		if v == 1 {
			return "no_new_privs set", errors.New("no_new_privs")
		}
		return "no_new_privs not set", nil
	},
}

func runCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func behaveAttack(_ context.Context, inv *invocation) (response, error) {
	what := inv.req.URL.Query().Get("what")
	f, ok := attacks[what]
	if !ok {
		return textResponse(http.StatusBadRequest, "unknown attack "+what), nil
	}
	detail, err := f()
	res := attackResult{What: what, OK: err == nil, Detail: detail}
	if err != nil {
		res.Detail = strings.TrimSpace(detail + " " + err.Error())
	}
	return jsonResponse(res)
}

// behaveAlloc allocates and touches mb megabytes, to be OOM-killed under a
// smaller memory limit.
func behaveAlloc(_ context.Context, inv *invocation) (response, error) {
	mb, err := queryInt(inv.req, "mb", 64)
	if err != nil {
		return response{}, err
	}
	chunks := make([][]byte, 0, mb)
	for i := 0; i < mb; i++ {
		c := make([]byte, 1<<20)
		for j := 0; j < len(c); j += 4096 {
			c[j] = 1
		}
		chunks = append(chunks, c)
	}
	runtime.KeepAlive(chunks)
	return textResponse(http.StatusOK, "allocated"), nil
}

// behaveWork spends us microseconds (1000 when unset) of CPU on one
// thread and answers "worked": a function that computes, for the warm
// benchmarks' throughput where the runtime's own work bounds it. The time is
// the thread's own CPU time, so a busy host stretches the request, not the
// work: every request costs the same CPU whatever else runs.
func behaveWork(_ context.Context, inv *invocation) (response, error) {
	us, err := queryInt(inv.req, "us", 1000)
	if err != nil {
		return response{}, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &now); err != nil {
		return response{}, err
	}
	for end := now.Nano() + int64(us)*1000; now.Nano() < end; {
		if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &now); err != nil {
			return response{}, err
		}
	}
	return textResponse(http.StatusOK, "worked"), nil
}

// behaveSpin keeps every CPU busy for ms milliseconds.
func behaveSpin(_ context.Context, inv *invocation) (response, error) {
	ms, err := queryInt(inv.req, "ms", 500)
	if err != nil {
		return response{}, err
	}
	end := time.Now().Add(time.Duration(ms) * time.Millisecond)
	done := make(chan struct{})
	for i := 0; i < runtime.NumCPU(); i++ {
		go func() {
			x := 0
			for time.Now().Before(end) {
				x++
			}
			done <- struct{}{}
		}()
	}
	for i := 0; i < runtime.NumCPU(); i++ {
		<-done
	}
	return textResponse(http.StatusOK, "spun"), nil
}
