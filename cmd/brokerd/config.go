package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// applySettings layers configuration sources onto fs, which has already
// parsed the command line: flags given on the command line win, then
// RINGER_<FLAG> environment variables, then the YAML file named by --config
// (whose keys are the flag names; an unknown key is an error), then defaults.
func applySettings(fs *flag.FlagSet, configFile string, env func(string) string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var fromFile map[string]any
	if configFile != "" {
		data, err := os.ReadFile(configFile)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		if err := dec.Decode(&fromFile); err != nil && err.Error() != "EOF" {
			return fmt.Errorf("config %s: %w", configFile, err)
		}
		var unknown []string
		for k := range fromFile {
			if fs.Lookup(k) == nil || k == "config" {
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return fmt.Errorf("config %s: unknown keys %s (keys are the flag names, see --help)", configFile, strings.Join(unknown, ", "))
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] || f.Name == "config" {
			return
		}
		if v := env(envName(f.Name)); v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("env %s: %w", envName(f.Name), e)
			}
			return
		}
		if v, ok := fromFile[f.Name]; ok {
			if e := fs.Set(f.Name, fmt.Sprint(v)); e != nil {
				err = fmt.Errorf("config %s: %s: %w", configFile, f.Name, e)
			}
		}
	})
	return err
}

// envName maps a flag name to its environment variable: presence-ttl → RINGER_PRESENCE_TTL.
func envName(flagName string) string {
	return "RINGER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}
