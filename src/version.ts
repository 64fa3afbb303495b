// The version of Ferry, printed by 'ferry version' and shown on the status page.
export const VERSION = '0.1.0'
