package images

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/moby/sys/userns"
	"go.podman.io/image/v5/pkg/blobinfocache/memory"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"
	"go.podman.io/storage/pkg/configfile"

	"executor/oci"
)

// Config configures a Store.
type Config struct {
	// Root is the directory owned by the store, e.g. <data>/images. One Store per Root.
	Root string
	// OwnMount makes Root a mount of its own (a bind mount on itself, or
	// the one a run that died left), which Close undoes: overlayfs then
	// finds no other mount below the layers' at each MountRoot
	// (ownmount.go). Without the privilege to mount the store works
	// without it.
	OwnMount bool
	// RegistriesConf is the registries.conf path; "" means the standard lookup
	// (CONTAINERS_REGISTRIES_CONF, then /etc/containers/registries.conf).
	RegistriesConf string
	// AuthFile is the auth.json path (containers-auth.json(5)); "" means
	// containers' standard lookup (${XDG_RUNTIME_DIR}/containers/auth.json or
	// /run/containers/<uid>/auth.json, $XDG_CONFIG_HOME/containers/auth.json,
	// then Docker's config.json). Nothing reads REGISTRY_AUTH_FILE here: that
	// is for the caller (the daemon) to pass in.
	AuthFile string
	// DockerHubUsername and DockerHubPassword are used for docker.io itself
	// only; never for its mirrors or any other registry.
	DockerHubUsername, DockerHubPassword string
	// PolicyPath is the signature policy (policy.json). "" means the standard
	// lookup (/etc/containers/policy.json and friends) when such a file
	// exists, and accepting any image when none does.
	PolicyPath string
	// IDMap, when set, stores layers with their owners shifted into a host
	// range (container uid/gid 0 becomes HostUID/HostGID) for runtimes in a
	// user namespace with that mapping: files then keep their image owners
	// inside the runtime. An owner the range cannot hold (a uid or gid of
	// Size or more) becomes OverflowID, with one warning per image, instead
	// of failing the pull. Layers of different mappings are kept apart.
	// Without an IDMap owners are kept as they are, but for those no file
	// can have ((uid_t)-1 and past 32 bits), which become OverflowID too.
	IDMap *oci.IDMap
	// ArchiveDir, when set, is the one directory the oci:, oci-archive: and
	// docker-archive: transports may read (air-gapped hosts: archives and
	// layouts the operator put there). "" refuses those transports: they
	// read host paths the caller names, as root.
	ArchiveDir string
	// SizeLimit caps the uncompressed bytes one pull unpacks, MaxEntries the
	// files (tar entries) it creates; 0 means DefaultSizeLimit and
	// DefaultMaxEntries. A layer crossing either fails the pull with
	// ErrImageTooLarge and is removed.
	SizeLimit  int64
	MaxEntries int64
	// PullTimeout bounds one pull from its source, however many callers
	// share it: a registry that accepts and then stalls would otherwise hold
	// the pull (and a pre-pull at start, or a POST /v1/images whose client
	// waits) for ever, since the registry client has no overall deadline.
	// A pull past it fails with ErrRegistryUnreachable. 0 means
	// DefaultPullTimeout.
	PullTimeout time.Duration
	// Logger receives the store's records (the caller names the component); nil means slog.Default().
	Logger *slog.Logger
	// Observer is told of every pull from a source (metrics); nil: nothing.
	Observer Observer
}

// validateIDMap checks what the store relies on: positive host ids (host
// root is never a runtime's), a range that holds OverflowID, and no host id
// past 2^32-2 ((uid_t)-1 means "no id" to the kernel). It is oci's
// IDMap.Validate in substance; the messages are the store's own.
func validateIDMap(m oci.IDMap) error {
	switch {
	case m.HostUID <= 0 || m.HostGID <= 0:
		return errors.New("host ids must be positive")
	case m.Size < minIDs:
		return fmt.Errorf("the range must hold at least %d ids", minIDs)
	case m.Size-1 > maxHostID || m.HostUID > maxHostID-(m.Size-1) || m.HostGID > maxHostID-(m.Size-1):
		return fmt.Errorf("the range goes past the largest id %d", maxHostID)
	}
	return nil
}

// Store is the local image store. It is safe for concurrent use.
type Store struct {
	cfg  Config
	root string
	log  *slog.Logger
	// archiveDir is Config.ArchiveDir with its symlinks resolved; "" when unset.
	archiveDir string
	policy     *signature.Policy
	// cache remembers where blobs were found (mirrors) across pulls. It is the
	// in-memory variant: the persistent one needs cgo sqlite, and the store's
	// own layer directories already make repeated pulls cheap.
	cache types.BlobInfoCache

	// layerSize is the layer store's size, for LayerBytes.
	layerSize layerBytes

	pulls    flightGroup[*Image]
	layers   flightGroup[layerResult]
	progress progressHub // the layers of pulls in flight, for PullWithProgress

	overlay overlaySupport // how MountRoot assembles roots on this host; set by New
	// xattrs is where the layers keep overlayfs' xattrs: user.overlay.*
	// when New found itself in a user namespace, else trusted.overlay.*.
	xattrs overlayXattrs

	// ownMounted: New made the root a mount of its own (ownmount.go),
	// for Close to undo.
	ownMounted bool

	// mounts maps each mounted root's dir to what it holds, until UnmountRoot.
	mountsMu sync.Mutex
	mounts   map[string]*mountUse

	// mu guards the use tracking GC relies on (see gc.go).
	mu      sync.Mutex
	inUse   map[string]int // image key -> mounted roots made from it
	pulling map[string]int // image key -> pulls in flight
	pins    map[string]int // layer dir -> mounted roots and pulls that need it
}

// New opens (creating if needed) the store at cfg.Root and removes what an
// interrupted pull left in Root/tmp.
func New(cfg Config) (*Store, error) {
	if cfg.Root == "" {
		return nil, errors.New("images: Config.Root is required")
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("images: root: %w", err)
	}
	if cfg.RegistriesConf != "" {
		if _, err := os.Stat(cfg.RegistriesConf); err != nil {
			return nil, fmt.Errorf("images: registries.conf: %w", err)
		}
	}
	if cfg.AuthFile != "" {
		if _, err := os.Stat(cfg.AuthFile); err != nil {
			return nil, fmt.Errorf("images: auth file: %w", err)
		}
	}
	if cfg.SizeLimit < 0 || cfg.MaxEntries < 0 || cfg.PullTimeout < 0 {
		return nil, fmt.Errorf("images: SizeLimit %d, MaxEntries %d and PullTimeout %v must not be negative", cfg.SizeLimit, cfg.MaxEntries, cfg.PullTimeout)
	}
	if cfg.PullTimeout == 0 {
		cfg.PullTimeout = DefaultPullTimeout
	}
	if cfg.SizeLimit == 0 {
		cfg.SizeLimit = DefaultSizeLimit
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Store{cfg: cfg, root: root, log: log, cache: memory.New()}
	// Decided once: layers unpacked one way cannot be read the other way,
	// and layersDir keeps the two apart.
	s.xattrs = overlayXattrs{user: userns.RunningInUserNS()}
	if cfg.ArchiveDir != "" {
		if s.archiveDir, err = resolveArchiveDir(cfg.ArchiveDir); err != nil {
			return nil, fmt.Errorf("images: archive dir: %w", err)
		}
	}
	// Private to root: overlayfs reads lower layers with the mounter's
	// credentials, so runtimes never need to traverse the store themselves.
	for _, d := range []string{root, s.layersDir(), s.imagesDir(), s.emptyDir(), s.blobInfoCacheDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("images: %w", err)
		}
	}
	if cfg.OwnMount {
		s.ownMount()
	}
	if err := s.cleanTmp(); err != nil {
		return nil, fmt.Errorf("images: clean %s: %w", s.tmpDir(), err)
	}
	if m := cfg.IDMap; m != nil {
		if err := validateIDMap(*m); err != nil {
			return nil, fmt.Errorf("images: id map %+v: %w", *m, err)
		}
		// The "/" of an image without layers must belong to the mapped root too.
		if err := os.Chown(s.emptyDir(), int(m.HostUID), int(m.HostGID)); err != nil {
			return nil, fmt.Errorf("images: %w", err)
		}
	}
	if s.policy, err = loadPolicy(cfg.PolicyPath); err != nil {
		return nil, fmt.Errorf("images: signature policy: %w", err)
	}
	s.overlay = s.probeOverlay()
	return s, nil
}

// resolveArchiveDir is dir with its symlinks resolved, so that paths are
// confined to what it really is; it must be an absolute path to a directory.
func resolveArchiveDir(dir string) (string, error) {
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("%q is not an absolute path", dir)
	}
	resolved, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(resolved)
	if err != nil {
		return "", err
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s is not a directory", dir)
	}
	return resolved, nil
}

// layersDir is where this store's layers are: one directory per way of
// unpacking them, so that a layer is only ever read the way it was written.
// Layers with shifted owners (IDMap) are kept per mapping, and layers
// unpacked in a user namespace, whose opaque markers are user.overlay.*
// xattrs, apart from real root's, whose are trusted.overlay.*: a store
// opened on the same Root the other way never finds them (it unpacks its
// own, and GC removes the other's in time).
func (s *Store) layersDir() string {
	name := "layers"
	if s.xattrs.user {
		name += "-userxattr"
	}
	if m := s.cfg.IDMap; m != nil {
		name += fmt.Sprintf("-%d-%d-%d", m.HostUID, m.HostGID, m.Size)
	}
	return filepath.Join(s.root, name)
}
func (s *Store) imagesDir() string        { return filepath.Join(s.root, "images") }
func (s *Store) tmpDir() string           { return filepath.Join(s.root, "tmp") }
func (s *Store) emptyDir() string         { return filepath.Join(s.root, "empty") }
func (s *Store) blobInfoCacheDir() string { return filepath.Join(s.root, "blobinfocache") }

// cleanTmp removes everything in Root/tmp: half-unpacked layers, unfinished
// records, archives extracted by the oci-archive transport, overlay probes.
func (s *Store) cleanTmp() error {
	tmp := s.tmpDir()
	entries, err := os.ReadDir(tmp)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(tmp, e.Name())
		if strings.HasPrefix(e.Name(), probePrefix) {
			// A crash during the overlay probe can leave its mount behind;
			// removing files through it would be pointless work.
			if err := UnmountRoot(p); err != nil {
				return err
			}
		}
		s.log.Info("removing leftover from an interrupted operation", "path", p)
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	return os.MkdirAll(tmp, 0o700)
}

// systemContext points containers/image at the store instead of its
// system-wide defaults (/var/lib/containers/cache, /var/tmp) and leaves
// configuration files to their documented lookup.
func (s *Store) systemContext(ref types.ImageReference) *types.SystemContext {
	sys := &types.SystemContext{
		SystemRegistriesConfPath: s.cfg.RegistriesConf,
		AuthFilePath:             s.cfg.AuthFile,
		BlobInfoCacheDir:         s.blobInfoCacheDir(),
		BigFilesTemporaryDir:     s.tmpDir(),
		OSChoice:                 "linux",
		ArchitectureChoice:       runtime.GOARCH,
		DockerRegistryUserAgent:  "open-runtimes-executor",
	}
	sys.DockerProxy = s.registryProxy(sys)
	// containers/image itself drops DockerAuthConfig for mirrors on another
	// domain; limiting it to docker.io keeps it from every other registry.
	if s.cfg.DockerHubUsername != "" && isDockerHub(ref) {
		sys.DockerAuthConfig = &types.DockerAuthConfig{
			Username: s.cfg.DockerHubUsername,
			Password: s.cfg.DockerHubPassword,
		}
	}
	return sys
}

func loadPolicy(path string) (*signature.Policy, error) {
	if path != "" {
		return signature.NewPolicyFromFile(path)
	}
	p, err := signature.DefaultPolicy(nil)
	if errors.Is(err, configfile.ErrConfigFileNotFound) || errors.Is(err, os.ErrNotExist) {
		// No policy configured on this host: behave like Docker, which has none.
		return &signature.Policy{Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()}}, nil
	}
	return p, err
}
