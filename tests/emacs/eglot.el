;;; eglot.el --- marunochi behind Emacs's own LSP client, as the README sets it up  -*- lexical-binding: t -*-

;; A real Emacs (Debian's emacs-nox 28 with elpa-eglot), batch mode: the README's eglot snippet
;; verbatim puts `marunochi proxy -- pylsp' behind python-mode; completion at point at the end of
;; `    return fib' must offer the marunochi item among pylsp's, and taking it (the way
;; `completion-at-point' does: the candidate inserted, then eglot's exit function, which applies the
;; item's text edit and tells the server) must leave the suggestion in the buffer.
;;
;; Run with `emacs --batch -l tests/emacs/eglot.el'. Environment: MARUNOCHI_EMACS_FILE, a Python
;; file whose last line is `    return fib'; `marunochi' and `pylsp' on PATH. stdout gets one line:
;; `PASS <what was checked>' or `FAIL <reason>'; exit code 0 / 1.

(require 'eglot)
(require 'seq)

;; The README's snippet, verbatim.
(with-eval-after-load 'eglot
  (add-to-list 'eglot-server-programs
               '(python-mode . ("marunochi" "proxy" "--" "pylsp"))))

(defun marunochi-test-finish (ok format-string &rest args)
  (princ (concat (if ok "PASS " "FAIL ") (replace-regexp-in-string "\n" " " (apply #'format format-string args)) "\n"))
  (kill-emacs (if ok 0 1)))

(defun marunochi-test-wait (what predicate seconds)
  (let ((deadline (+ (float-time) seconds)))
    (while (not (funcall predicate))
      (when (> (float-time) deadline)
        (marunochi-test-finish nil "timed out waiting for %s" what))
      (accept-process-output nil 0.05))))

(defun marunochi-test-ours-p (candidate)
  (let ((item (get-text-property 0 'eglot--lsp-item candidate)))
    (equal (plist-get (plist-get item :labelDetails) :description) "marunochi")))

(condition-case failure
    (progn
      (find-file (getenv "MARUNOCHI_EMACS_FILE"))
      (unless (eq major-mode 'python-mode)
        (marunochi-test-finish nil "the file opened in %s, not python-mode" major-mode))
      (apply #'eglot (eglot--guess-contact))
      (marunochi-test-wait "eglot to connect" #'eglot-current-server 60)
      (let* ((server (eglot-current-server))
             (command (process-command (jsonrpc--process server))))
        (unless (equal (seq-take command 3) '("marunochi" "proxy" "--"))
          (marunochi-test-finish nil "the server was not started behind the proxy: %S" command))
        (goto-char (point-max))
        (skip-chars-backward "\n")
        (let* ((before (buffer-substring-no-properties (line-beginning-position) (point)))
               (capf (or (eglot-completion-at-point) (marunochi-test-finish nil "no completion at point")))
               (start (nth 0 capf))
               (end (nth 1 capf))
               (table (nth 2 capf))
               (exit (plist-get (nthcdr 3 capf) :exit-function))
               (typed (buffer-substring-no-properties start end))
               (candidates (all-completions typed table))
               (ours (or (seq-find #'marunochi-test-ours-p candidates)
                         (marunochi-test-finish nil "no marunochi item among %S" candidates))))
          (delete-region start end)
          (goto-char start)
          (insert ours)
          (funcall exit ours 'finished)
          (let ((after (buffer-substring-no-properties (line-beginning-position) (line-end-position))))
            (unless (and (string-prefix-p before after) (> (length after) (1+ (length before))))
              (marunochi-test-finish nil "the item did not complete %S: the line is %S" before after))
            ;; Let the proxy read the change before the server is shut down.
            (accept-process-output nil 0.5)
            (eglot-shutdown server)
            (marunochi-test-finish t "emacs %s, %s: pylsp behind the proxy, the marunochi item among %d candidates taken (%S)"
                                   emacs-version
                                   (file-name-nondirectory (directory-file-name (file-name-directory (locate-library "eglot"))))
                                   (length candidates) after)))))
  (error (marunochi-test-finish nil "error: %S" failure)))
