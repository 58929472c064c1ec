package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"

	"go.podman.io/image/v5/pkg/sysregistriesv2"

	"executor/images"
)

// What SIGHUP changes without a restart. A running process's environment
// never changes, so the daemon reads the settings again from the file that
// OPR_EXECUTOR_ENV_FILE names: the unit's EnvironmentFile= (contrib/).
// reloadableSettings take effect at once; any other variable changed there
// is logged by name as needing a restart, and keeps its running value.
// registries.conf is read afresh at the next pull after every SIGHUP, with
// or without an environment file.
var reloadableSettings = []string{
	"OPR_EXECUTOR_LOG_LEVEL",
	"OPR_EXECUTOR_IMAGES",
	"OPR_EXECUTOR_RUNTIMES",
}

// reloadConfig is what a reloader changes and reports to.
type reloadConfig struct {
	Config *config
	// Getenv is the daemon's own environment (what systemd gave it at start).
	Getenv func(string) string
	Level  *slog.LevelVar
	Images *images.Store
	Notify *notifier
	Logger *slog.Logger
}

// reloader applies SIGHUPs. Reloads run one at a time (the daemon's signal
// loop); prePullImages may be called from any goroutine.
type reloader struct {
	cfg reloadConfig
	// startFile is the environment file as it was at start: a variable it
	// set and a reload no longer finds there goes back to its default, as it
	// would at a restart. Variables the file never set keep the value from
	// the daemon's own environment (Environment= lines of the unit).
	startFile map[string]string
	// current is the value in effect of every variable an environment file
	// set, at start or since.
	current map[string]string
	// pulls are the pre-pulls reloads started.
	pulls sync.WaitGroup

	mu      sync.Mutex
	prePull []string
}

// newReloader reads the environment file, if one is named: a file the daemon
// cannot read or parse at start stops it, rather than failing the first
// SIGHUP. A file that disagrees with the environment the daemon started with
// is reported: its values are the ones a SIGHUP applies.
func newReloader(c reloadConfig) (*reloader, error) {
	r := &reloader{cfg: c, current: map[string]string{}, prePull: c.Config.prePullImages()}
	if c.Config.EnvFile == "" {
		return r, nil
	}
	file, err := readEnvFile(c.Config.EnvFile)
	if err != nil {
		return nil, fmt.Errorf("OPR_EXECUTOR_ENV_FILE: %w", err)
	}
	r.startFile = file
	var differ []string
	for name, v := range file {
		r.current[name] = c.Getenv(name)
		if v != r.current[name] {
			differ = append(differ, name)
		}
	}
	if len(differ) > 0 {
		slices.Sort(differ)
		c.Logger.Warn("the environment file (OPR_EXECUTOR_ENV_FILE) does not hold the values the daemon started with; a SIGHUP applies the file's (is it the unit's EnvironmentFile=?)",
			"file", c.Config.EnvFile, "settings", differ)
	}
	return r, nil
}

// prePullImages is the pre-pull list in effect: pulled at start or by a
// reload, and kept by image garbage collection.
func (r *reloader) prePullImages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.prePull)
}

// wait waits for the pulls reloads started (ctx, given to reload, ends them).
func (r *reloader) wait() { r.pulls.Wait() }

// reload applies one SIGHUP. It never stops the daemon: a file it cannot
// read, or a value that would stop a starting daemon, changes nothing and is
// logged.
func (r *reloader) reload(ctx context.Context) {
	log := r.cfg.Logger
	if ctx.Err() != nil {
		log.Info("SIGHUP while stopping: ignored")
		return
	}
	done := r.cfg.Notify.reloading()
	defer done()
	// containers/image caches registries.conf per path; the next pull reads
	// it again (mirrors, blocked registries, aliases, local registries).
	sysregistriesv2.InvalidateCache()
	path := r.cfg.Config.EnvFile
	if path == "" {
		log.Info("SIGHUP: registries.conf is read again at the next pull; no OPR_EXECUTOR_ENV_FILE names an environment file, so other settings change only with a restart")
		return
	}
	file, err := readEnvFile(path)
	if err != nil {
		log.Error("SIGHUP: environment file not reloaded; nothing changed", "file", path, "err", err)
		return
	}
	getenv := func(name string) string {
		if v, ok := file[name]; ok {
			return v
		}
		if _, ok := r.startFile[name]; ok {
			return "" // removed from the file: its default, as at a restart
		}
		return r.cfg.Getenv(name)
	}
	next, err := loadConfig(getenv)
	if err != nil {
		log.Error("SIGHUP: the environment file would not start the daemon; nothing changed", "file", path, "err", err)
		return
	}
	var environ []string
	for name, v := range file {
		environ = append(environ, name+"="+v)
	}
	unknown := unknownSettings(environ)
	for _, name := range unknown {
		log.Warn("SIGHUP: unknown setting in the environment file: ignored (a typo?)", "file", path, "name", name)
	}

	var applied, restart []string
	for _, name := range r.changed(file, getenv) {
		switch {
		case slices.Contains(unknown, name):
		case slices.Contains(reloadableSettings, name):
			applied = append(applied, name)
			r.current[name] = getenv(name)
		default:
			restart = append(restart, name)
		}
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(next.LogLevel)) // loadConfig checked it
	if from := r.cfg.Level.Level(); level != from {
		r.cfg.Level.Set(level)
		log.Info("SIGHUP: log level changed", "from", from, "to", level)
	}
	if slices.Contains(applied, "OPR_EXECUTOR_IMAGES") || slices.Contains(applied, "OPR_EXECUTOR_RUNTIMES") {
		r.setPrePull(ctx, next)
	}
	if len(restart) > 0 {
		log.Warn("SIGHUP: these settings changed in the environment file and take effect only at a restart; they keep their running values",
			"file", path, "settings", restart)
	}
	log.Info("SIGHUP: reloaded", "file", path, "applied", applied, "needRestart", restart)
}

// changed lists, sorted, the variables whose value getenv gives differs
// from the one in effect: only those a file sets or set can differ.
func (r *reloader) changed(file map[string]string, getenv func(string) string) []string {
	var out []string
	seen := map[string]bool{}
	for _, m := range []map[string]string{file, r.startFile, r.current} {
		for name := range m {
			if seen[name] {
				continue
			}
			seen[name] = true
			now, ok := r.current[name]
			if !ok {
				now = r.cfg.Getenv(name)
			}
			if getenv(name) != now {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// setPrePull makes next's images and runtimes (for the running protocol
// versions, which a reload does not change) the pre-pull list: new ones are
// pulled now in the background, removed ones are no longer kept by image
// garbage collection (and go once unused for OPR_EXECUTOR_IMAGE_GC_AGE).
func (r *reloader) setPrePull(ctx context.Context, next *config) {
	list := (&config{Images: next.Images, Runtimes: next.Runtimes, RuntimeVersions: r.cfg.Config.RuntimeVersions}).prePullImages()
	r.mu.Lock()
	old := r.prePull
	r.prePull = list
	r.mu.Unlock()
	var added, removed []string
	for _, ref := range list {
		if !slices.Contains(old, ref) {
			added = append(added, ref)
		}
	}
	for _, ref := range old {
		if !slices.Contains(list, ref) {
			removed = append(removed, ref)
		}
	}
	r.cfg.Logger.Info("SIGHUP: pre-pull list changed", "added", added, "removed", removed)
	if len(added) == 0 || r.cfg.Images == nil {
		return
	}
	r.pulls.Add(1)
	go func() {
		defer r.pulls.Done()
		prePull(ctx, r.cfg.Images, added, r.cfg.Logger)
	}()
}

// readEnvFile reads an environment file as systemd's EnvironmentFile= does:
// NAME=VALUE lines; blank lines and lines starting with # or ; are skipped;
// blanks around the name and before the value are dropped; a value wholly in
// single or double quotes loses them (in double quotes, \" \\ \$ and \`
// escape); an unquoted value loses trailing blanks and continues on the next
// line after a trailing backslash. Anything else is an error naming the line,
// where systemd would skip it.
func readEnvFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		for strings.HasSuffix(line, `\`) && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, ";") && sc.Scan() {
			n++
			line = strings.TrimSuffix(line, `\`) + strings.TrimSpace(sc.Text())
		}
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		name = strings.TrimSpace(name)
		if !ok || !validEnvName(name) {
			return nil, fmt.Errorf("%s:%d: not NAME=VALUE", path, n)
		}
		value, err := unquote(strings.TrimSpace(value))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %w", path, n, name, err)
		}
		out[name] = value
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// validEnvName: letters, digits and underscores, not starting with a digit.
func validEnvName(s string) bool {
	for i, c := range s {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return s != ""
}

// unquote removes the quotes around a value wholly in quotes.
func unquote(v string) (string, error) {
	if len(v) == 0 || (v[0] != '"' && v[0] != '\'') {
		return v, nil
	}
	q := v[0]
	if len(v) < 2 || v[len(v)-1] != q {
		return "", fmt.Errorf("unterminated %c quote", q)
	}
	inner := v[1 : len(v)-1]
	if q == '\'' {
		return inner, nil
	}
	var b strings.Builder
	for i := 0; i < len(inner); i++ {
		c := inner[i]
		if c == '\\' && i+1 < len(inner) && strings.IndexByte("\"\\$`", inner[i+1]) >= 0 {
			i++
			c = inner[i]
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}
