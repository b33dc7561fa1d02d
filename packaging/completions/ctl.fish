complete --keep-order --exclusive --command ctl --arguments "(COMPLETE=fish ctl -- (commandline --current-process --tokenize --cut-at-cursor) (commandline --current-token))"
