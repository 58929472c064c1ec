package main

import (
	"slices"
	"strings"

	"executor/storage"
)

// settingPrefix is the prefix of every variable the executor reads; one
// that no setting reads is most likely a misspelt one, which would
// otherwise silently leave its setting at the default.
const settingPrefix = "OPR_EXECUTOR_"

// legacyStorageDevices are the values of OPR_EXECUTOR_STORAGE_DEVICE whose
// seed-era OPR_EXECUTOR_STORAGE_<DEVICE>_* variables the storage package reads.
var legacyStorageDevices = []string{"s3", "dospaces", "backblaze", "linode", "wasabi"}

// unknownSettings returns the OPR_EXECUTOR_* names in environ that no
// setting reads, sorted and once each.
func unknownSettings(environ []string) []string {
	known := knownSettings()
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, settingPrefix) && !known[name] && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// knownSettings is every variable the configuration may read: the settings
// table's names and fallbacks, and the seed-era storage variables, which the
// storage package reads itself. Those are found by asking the storage
// package with a getenv that records what it is asked for, so the list
// cannot drift from what it reads.
func knownSettings() map[string]bool {
	known := map[string]bool{}
	record := func(name string) string {
		known[name] = true
		return ""
	}
	for _, s := range (&config{}).settings(record) {
		known[s.name] = true
		if s.fallback != "" {
			known[s.fallback] = true
		}
	}
	known[storage.EnvLegacyDevice] = true
	// Every value is empty, so each device reads all of its variables
	// (the S3 host is read only when its endpoint is empty) before it
	// fails on the empty bucket.
	for _, d := range legacyStorageDevices {
		_, _ = storage.LegacyDSN(d, record)
	}
	return known
}
