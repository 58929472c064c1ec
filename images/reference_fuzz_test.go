package images

import (
	"errors"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// referenceSeeds are references as the API receives them (spec §3.2 `image`, OPR_EXECUTOR_IMAGES) and hostile
// ones: archive paths climbing out, symlinks planted in the archive directory, odd tags and digests.
var referenceSeeds = []string{
	"node", "openruntimes/node:v5-18.0", "openruntimes/php:v4-8.0", "docker.io/library/node:20",
	"ghcr.io/open-runtimes/node@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
	"registry.example.com:5000/a/b:tag@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
	"docker://node:20", "docker:node", "localhost/x", "[::1]:5000/x", "127.0.0.1:22/x", "UPPER/case", "a:b:c",
	"oci:layout:v1", "oci:/etc:latest", "oci:../outside/layout", "oci:abs", "oci:rel/..", "oci:" + "up:x",
	"oci-archive:image.tar", "oci-archive:/etc/shadow", "docker-archive:etc-link/passwd:x:0", "docker-archive:loop",
	"docker-archive:image.tar:node:20", "oci:root/etc", "dir:/tmp", "containers-storage:x", "", ":", "oci:", "x@",
}

// FuzzParseReference parses references as Pull does, with an archive directory holding symlinks that point out of
// it, and checks what parseReference promises: a refusal is ErrInvalidReference (or, for an archive path,
// ErrImageNotFound); a registry reference is canonical (its canonical name parses to itself); an archive
// reference never names a path outside the archive directory, whatever its symlinks say.
func FuzzParseReference(f *testing.F) {
	for _, r := range referenceSeeds {
		f.Add(r)
	}
	base := f.TempDir()
	dir := filepath.Join(base, "archives")
	if err := os.MkdirAll(filepath.Join(dir, "layout"), 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "image.tar"), []byte("not a tar"), 0o644); err != nil {
		f.Fatal(err)
	}
	for name, target := range map[string]string{
		"abs": base, "up": "..", "root": "/", "loop": "loop", "etc-link": "/etc", "rel": "../../..",
	} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			f.Fatal(err)
		}
	}
	s := openTestStore(f, Config{ArchiveDir: dir})
	f.Fuzz(func(t *testing.T, ref string) {
		r, err := s.parseReference(ref)
		if err != nil {
			if !errors.Is(err, ErrInvalidReference) && !errors.Is(err, ErrImageNotFound) {
				t.Fatalf("%q: %v is neither ErrInvalidReference nor ErrImageNotFound", ref, err)
			}
			return
		}
		name := canonicalName(r)
		switch transport := r.Transport().Name(); transport {
		case dockerTransport:
			again, err := s.parseReference(name)
			if err != nil {
				t.Fatalf("%q: canonical name %q does not parse: %v", ref, name, err)
			}
			if got := canonicalName(again); got != name || imageKey(again) != imageKey(r) {
				t.Fatalf("%q: canonical name %q parses to %q", ref, name, got)
			}
			if named := r.DockerReference(); named == nil || !strings.Contains(named.String(), "/") {
				t.Fatalf("%q: %q is not fully qualified", ref, name)
			}
		case "oci", "oci-archive", "docker-archive":
			within := r.StringWithinTransport()
			if !strings.HasPrefix(within, s.archiveDir+"/") && within != s.archiveDir && !strings.HasPrefix(within, s.archiveDir+":") {
				t.Fatalf("%q: %s reference %q is outside the archive directory %s", ref, transport, within, s.archiveDir)
			}
			// As spelled, and as its symlinks resolve when it exists.
			p, _, _ := strings.Cut(within, ":")
			if filepath.Clean(p) != p {
				t.Fatalf("%q: %s path %q is not clean", ref, transport, p)
			}
			if real, err := filepath.EvalSymlinks(p); err == nil && real != s.archiveDir && !strings.HasPrefix(real, s.archiveDir+"/") {
				t.Fatalf("%q: %s path %q resolves to %s, outside the archive directory %s", ref, transport, p, real, s.archiveDir)
			}
		default:
			t.Fatalf("%q: transport %q accepted", ref, transport)
		}
	})
}

// FuzzRegistryHost checks that the registry proxy hook refuses every loopback, link-local, unspecified and
// multicast address, however the URL spells it (IPv4-mapped IPv6, zones, brackets, upper case), unless
// registries.conf names the host. Only IP literals are tried: a name would be looked up in the DNS.
func FuzzRegistryHost(f *testing.F) {
	for _, h := range []string{
		"https://127.0.0.1/v2/", "https://127.0.0.1:5000/v2/", "http://[::1]:5000/v2/", "https://[::ffff:127.0.0.1]/v2/",
		"https://169.254.169.254/latest/meta-data", "https://[fe80::1%25eth0]:5000/v2/", "https://0.0.0.0/",
		"https://[::]/", "https://224.0.0.1/", "https://[FF02::1]/", "https://10.0.0.1/v2/", "https://8.8.8.8/v2/",
		"https://[2001:db8::1]/v2/", "https://127.0.0.2:443/v2/", "https://[::ffff:169.254.169.254]/",
		"https://configured.example:5000/v2/", "https://127.0.0.1:5001/v2/",
	} {
		f.Add(h)
	}
	conf := filepath.Join(f.TempDir(), "registries.conf")
	if err := os.WriteFile(conf, []byte("[[registry]]\nlocation = \"127.0.0.1:5001\"\ninsecure = true\n"), 0o644); err != nil {
		f.Fatal(err)
	}
	s := openTestStore(f, Config{RegistriesConf: conf})
	own := ownAddrs()
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			t.Skip()
		}
		addr, err := netip.ParseAddr(u.Hostname())
		if err != nil {
			t.Skip() // a name: resolving it would need the network
		}
		// The hook as a pull installs it.
		_, err = s.systemContext(nil).DockerProxy(u)
		a := addr.Unmap().WithZone("")
		local := a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsUnspecified() ||
			a.IsMulticast() || own[a]
		configured := strings.EqualFold(u.Host, "127.0.0.1:5001")
		switch {
		case local && !configured && !errors.Is(err, ErrBlocked):
			t.Fatalf("%q (%s) reached: %v", raw, a, err)
		case (!local || configured) && errors.Is(err, ErrBlocked):
			t.Fatalf("%q (%s) refused: %v", raw, a, err)
		}
	})
}
