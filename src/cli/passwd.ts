// `ferry passwd FILE DEVICE`: adds or changes a device in a credentials file.
//
// On a terminal the password is asked twice without echo; otherwise the first line of stdin is the
// password (for scripts: `printf '%s\n' "$PW" | ferry passwd devices.passwd sensor-1`).
import readline from 'node:readline'
import { setPassword } from '../auth/index.js'
import { FerryError } from '../errors.js'

/** Reads one line from a terminal without echoing it. */
function askHidden(question: string): Promise<string> {
  return new Promise((resolve) => {
    const rl = readline.createInterface({ input: process.stdin, output: process.stderr, terminal: true })
    const out = rl as unknown as { _writeToOutput: (s: string) => void }
    process.stderr.write(question)
    out._writeToOutput = () => {}
    rl.question('', (answer) => {
      rl.close()
      process.stderr.write('\n')
      resolve(answer)
    })
  })
}

async function readStdinLine(): Promise<string> {
  const chunks: Buffer[] = []
  for await (const c of process.stdin) chunks.push(c as Buffer)
  return Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? ''
}

export const PASSWD_USAGE = 'Usage: ferry passwd FILE DEVICE   (password from the terminal, or the first line of stdin)\n'

/** Runs the command; returns the exit code. */
export async function passwd(args: string[]): Promise<number> {
  if (args.length !== 2 || args.some((a) => a.startsWith('-'))) {
    process.stderr.write(PASSWD_USAGE)
    return 2
  }
  const [file, device] = args as [string, string]
  let password: string
  if (process.stdin.isTTY) {
    password = await askHidden(`password for ${device}: `)
    if ((await askHidden('again: ')) !== password) {
      process.stderr.write('ferry passwd: the passwords differ; nothing changed\n')
      return 2
    }
  } else {
    password = await readStdinLine()
  }
  if (password.length === 0) {
    process.stderr.write('ferry passwd: empty password; nothing changed\n')
    return 2
  }
  try {
    const what = await setPassword(file, device, password)
    process.stderr.write(`ferry passwd: ${what} ${device} in ${file}\n`)
    return 0
  } catch (err) {
    if (err instanceof FerryError) {
      process.stderr.write(`ferry passwd: ${err.message}\n`)
      return 2
    }
    throw err
  }
}
