// Command paster is the stock paster build: the built-in dist (egg:paster)
// compiled in, every other dist found as a plugin binary. See package
// github.com/paster-dev/paster/cmd for the commands, and for how to make a
// build with dists of your own compiled in.
package main

import pastercmd "github.com/paster-dev/paster/cmd"

func main() {
	pastercmd.Main()
}
