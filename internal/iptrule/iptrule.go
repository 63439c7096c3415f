// Package iptrule reads rules as iptables prints them (`iptables -S`,
// iptables-save), for the agent's pod network and service rules alike.
package iptrule

import (
	"errors"
	"slices"
	"strings"
)

// ArgAfter returns the argument following flag, or "".
func ArgAfter(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// Split splits a rule line into arguments. iptables quotes an argument
// with spaces in double quotes and escapes quotes and backslashes in it
// with a backslash.
func Split(line string) ([]string, error) {
	var (
		args    []string
		cur     strings.Builder
		inQuote bool
		inArg   bool
	)
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case inQuote && ch == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case ch == '"':
			inQuote, inArg = !inQuote, true
		case ch == ' ' && !inQuote:
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(ch)
			inArg = true
		}
	}
	if inQuote {
		return nil, errors.New("unterminated quote")
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}
