package testenv

import (
	"fmt"
	"os"

	"golang.org/x/crypto/bcrypt"
)

// WriteHtpasswd writes an htpasswd file with one bcrypt entry, the only hash
// docker-registry accepts, for RegistryConfig.Htpasswd.
func WriteHtpasswd(path, username, password string) error {
	// MinCost: the file only guards a throwaway test registry, and every
	// authenticated request pays the hash cost.
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		return fmt.Errorf("hash password: %w", err)
	}
	if err := os.WriteFile(path, []byte(username+":"+string(hash)+"\n"), 0o600); err != nil {
		return fmt.Errorf("write htpasswd: %w", err)
	}
	return nil
}
