//go:build !unix

package main

// lockSQLiteServe: without flock, the one-serve rule on SQLite is the operator's to keep.
func lockSQLiteServe(string) (func(), error) { return func() {}, nil }
